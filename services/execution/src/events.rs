//! The `run` aggregate's events, stored in `EVT_EXECUTION`
//! (`evt.execution.<org>.run.<run_id>`): one `ExecutionStarted`, then one
//! terminal event, appended with the expected sequence so a run can never
//! end twice.

use promptops_eventlog::{
    AggregateRef, AppendError, Context, EventDraft, EventLog, EventMetadata, Expected, envelope_for,
};
use promptops_proto::eventlog::v1::EventEnvelope;
use promptops_proto::execution::v1::{
    ExecutionCancelled, ExecutionCompleted, ExecutionFailed, ExecutionStarted,
};
use prost::Message;

pub const STARTED: &str = "promptops.execution.v1.ExecutionStarted";
pub const COMPLETED: &str = "promptops.execution.v1.ExecutionCompleted";
pub const FAILED: &str = "promptops.execution.v1.ExecutionFailed";
pub const CANCELLED: &str = "promptops.execution.v1.ExecutionCancelled";
pub const AGGREGATE_TYPE: &str = "run";

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Terminal {
    Completed(ExecutionCompleted),
    Failed(ExecutionFailed),
    Cancelled(ExecutionCancelled),
}

impl Terminal {
    fn draft(&self) -> EventDraft {
        match self {
            Terminal::Completed(e) => EventDraft::new(COMPLETED, e.encode_to_vec()),
            Terminal::Failed(e) => EventDraft::new(FAILED, e.encode_to_vec()),
            Terminal::Cancelled(e) => EventDraft::new(CANCELLED, e.encode_to_vec()),
        }
    }
}

/// Appends the runs of one org's caller.
#[derive(Debug, Clone)]
pub struct Recorder {
    log: EventLog,
    aggregate: AggregateRef,
    metadata: EventMetadata,
}

impl Recorder {
    pub fn new(log: EventLog, org_id: &str, run_id: &str, metadata: EventMetadata) -> Result<Self, String> {
        let aggregate = AggregateRef::new(Context::Execution, org_id, AGGREGATE_TYPE, run_id)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            log,
            aggregate,
            metadata,
        })
    }

    /// The start's envelope, made when the run starts (its `occurred_at`),
    /// appended on its own ([`Self::append_start`]) or with the end
    /// ([`Self::started_and_ended`]).
    pub fn start(&self, event: &ExecutionStarted) -> EventEnvelope {
        envelope_for(
            &self.aggregate,
            1,
            EventDraft::new(STARTED, event.encode_to_vec()),
            &self.metadata,
        )
    }

    /// Records the start; returns its log sequence.
    pub async fn started(&self, event: &ExecutionStarted) -> Result<u64, AppendError> {
        self.append_start(&self.start(event)).await
    }

    /// Appends the start made by [`Self::start`]; returns its log sequence.
    pub async fn append_start(&self, start: &EventEnvelope) -> Result<u64, AppendError> {
        let appended = self
            .log
            .append(&self.aggregate, Expected::NoEvents, std::slice::from_ref(start))
            .await?;
        Ok(appended.last_sequence)
    }

    /// Records a run whose start was not appended yet: the start and the end
    /// in one append (one commit), so the log never holds the end without the
    /// start. Retries a store failure like [`Self::ended`] (a retry of an
    /// append that was committed after all is answered as a duplicate).
    pub async fn started_and_ended(
        &self,
        start: &EventEnvelope,
        terminal: &Terminal,
    ) -> Result<u64, AppendError> {
        let events = [start.clone(), self.end(terminal)];
        self.append_retrying("a run", Expected::NoEvents, &events).await
    }

    /// Records the end, after the start at `started_at`; returns its sequence.
    /// Retries a store failure a few times: a run must not stay unrecorded.
    pub async fn ended(&self, started_at: u64, terminal: &Terminal) -> Result<u64, AppendError> {
        let end = self.end(terminal);
        self.append_retrying(
            "a run's end",
            Expected::Sequence(started_at),
            std::slice::from_ref(&end),
        )
        .await
    }

    fn end(&self, terminal: &Terminal) -> EventEnvelope {
        envelope_for(&self.aggregate, 2, terminal.draft(), &self.metadata)
    }

    /// Appends `events`, again after a store failure ([`retry_store_failures`]);
    /// returns the last one's sequence.
    async fn append_retrying(
        &self,
        what: &str,
        expected: Expected,
        events: &[EventEnvelope],
    ) -> Result<u64, AppendError> {
        let appended = retry_store_failures(
            what,
            |err| matches!(err, AppendError::Store(_)),
            || self.log.append(&self.aggregate, expected, events),
        )
        .await?;
        Ok(appended.last_sequence)
    }
}

/// Runs `write`, and again after a failure of the store (up to 5 more times,
/// 100 ms to 1.6 s apart): the end of a run or of a turn must not stay
/// unrecorded because the log hiccuped. Other failures are returned at once.
pub async fn retry_store_failures<T, E, Fut>(
    what: &str,
    is_store_failure: fn(&E) -> bool,
    mut write: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut attempt = 0;
    loop {
        match write().await {
            Err(err) if is_store_failure(&err) && attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %err, attempt, "recording {what} failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            other => return other,
        }
    }
}
