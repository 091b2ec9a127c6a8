//! The `evaluation_run` aggregate (`evt.evaluation.<org>.evaluation_run.<id>`):
//! every case of a dataset version run on every target and scored. Pure.
//!
//! `EvaluationRunStarted` fixes the cases, targets and metrics;
//! `CaseScored` records one case × target, at most once (a second result
//! for the same pair is not recorded: a runner resumed after a crash may
//! run a case whose first execution was cut off, but never scores it
//! twice); `EvaluationRunFinished` ends it — completed once every pair is
//! scored, or cancelled, or failed.

use std::collections::HashSet;

use promptops_eventlog::aggregate::Aggregate;
use promptops_eventlog::{EventDraft, EventEnvelope};
use promptops_proto::evaluation::v1::{
    CaseResult, CaseScored, EvaluationRunFinished, EvaluationRunStarted, EvaluationRunStatus, MetricAggregate,
};
use prost::Message as _;

use crate::scoring;

pub const AGGREGATE_TYPE: &str = "evaluation_run";
pub const STARTED: &str = "promptops.evaluation.v1.EvaluationRunStarted";
pub const CASE_SCORED: &str = "promptops.evaluation.v1.CaseScored";
pub const FINISHED: &str = "promptops.evaluation.v1.EvaluationRunFinished";

/// Cases × targets in one run, at most.
pub const MAX_PAIRS: usize = 100_000;
/// An output kept in a result, at most (the execution's run has it whole).
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunState {
    pub started: Option<EvaluationRunStarted>,
    /// In the order they were scored.
    pub results: Vec<CaseResult>,
    scored: HashSet<(String, u32)>,
    pub finished: Option<EvaluationRunFinished>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    Started(EvaluationRunStarted),
    Scored(CaseScored),
    Finished(EvaluationRunFinished),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunCommand {
    Start(EvaluationRunStarted),
    Score(CaseResult),
    /// Completed (every pair scored), or cancelled / failed with a reason.
    Finish {
        status: EvaluationRunStatus,
        error: String,
        now_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("no such evaluation run")]
    NotFound,
    #[error("the evaluation run exists already")]
    Exists,
    #[error("{0} case(s) are not scored yet")]
    Incomplete(usize),
}

impl RunState {
    pub fn total(&self) -> usize {
        self.started
            .as_ref()
            .map_or(0, |s| s.case_ids.len() * s.targets.len())
    }

    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    pub fn is_scored(&self, case_id: &str, target: u32) -> bool {
        self.scored.contains(&(case_id.to_owned(), target))
    }

    /// The pairs not yet scored, in dataset order, target by target.
    pub fn pending(&self) -> Vec<(String, u32)> {
        let Some(started) = &self.started else {
            return Vec::new();
        };
        let mut pending = Vec::new();
        for case_id in &started.case_ids {
            for target in 0..started.targets.len() as u32 {
                if !self.is_scored(case_id, target) {
                    pending.push((case_id.clone(), target));
                }
            }
        }
        pending
    }

    /// Executions that failed (results without scores).
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.error.is_empty()).count()
    }

    pub fn status(&self) -> EvaluationRunStatus {
        match &self.finished {
            Some(f) => EvaluationRunStatus::try_from(f.status).unwrap_or(EvaluationRunStatus::Unspecified),
            None if self.started.is_some() => EvaluationRunStatus::Running,
            None => EvaluationRunStatus::Unspecified,
        }
    }

    /// Each metric over each target's scored cases.
    pub fn aggregates(&self) -> Vec<MetricAggregate> {
        let Some(started) = &self.started else {
            return Vec::new();
        };
        let mut aggregates = Vec::new();
        for target in 0..started.targets.len() as u32 {
            for spec in &started.metrics {
                let name = scoring::metric_name(spec);
                let scores: Vec<f64> = self
                    .results
                    .iter()
                    .filter(|r| r.target == target)
                    .flat_map(|r| r.scores.iter().filter(|s| s.metric == name).map(|s| s.value))
                    .collect();
                aggregates.push(scoring::aggregate(target, name, &scores));
            }
        }
        aggregates
    }
}

pub fn decide(state: &RunState, command: RunCommand) -> Result<Vec<RunEvent>, RunError> {
    match command {
        RunCommand::Start(started) => {
            if state.started.is_some() {
                return Err(RunError::Exists);
            }
            Ok(vec![RunEvent::Started(started)])
        }
        RunCommand::Score(result) => {
            let started = state.started.as_ref().ok_or(RunError::NotFound)?;
            let known = started.case_ids.contains(&result.case_id)
                && (result.target as usize) < started.targets.len();
            if state.is_finished() || !known || state.is_scored(&result.case_id, result.target) {
                return Ok(Vec::new());
            }
            Ok(vec![RunEvent::Scored(CaseScored {
                run_id: started.run_id.clone(),
                result: Some(result),
            })])
        }
        RunCommand::Finish {
            status,
            error,
            now_ms,
        } => {
            let started = state.started.as_ref().ok_or(RunError::NotFound)?;
            if state.is_finished() {
                return Ok(Vec::new());
            }
            if status == EvaluationRunStatus::Completed {
                let missing = state.total() - state.scored.len();
                if missing > 0 {
                    return Err(RunError::Incomplete(missing));
                }
            }
            Ok(vec![RunEvent::Finished(EvaluationRunFinished {
                run_id: started.run_id.clone(),
                status: status as i32,
                aggregates: state.aggregates(),
                error,
                finished_at_ms: now_ms,
            })])
        }
    }
}

pub fn evolve(mut state: RunState, event: &RunEvent) -> RunState {
    match event {
        RunEvent::Started(e) => state.started = Some(e.clone()),
        RunEvent::Scored(e) => {
            if let Some(result) = &e.result
                && state.scored.insert((result.case_id.clone(), result.target))
            {
                state.results.push(result.clone());
            }
        }
        RunEvent::Finished(e) => state.finished = Some(e.clone()),
    }
    state
}

#[derive(Debug)]
pub struct EvaluationRun;

impl Aggregate for EvaluationRun {
    type State = RunState;
    type Event = RunEvent;
    type Command = RunCommand;
    type Error = RunError;
    const TYPE: &'static str = AGGREGATE_TYPE;

    fn decide(state: &RunState, command: RunCommand) -> Result<Vec<RunEvent>, RunError> {
        decide(state, command)
    }

    fn evolve(state: RunState, event: &RunEvent) -> RunState {
        evolve(state, event)
    }

    fn encode(event: &RunEvent) -> EventDraft {
        match event {
            RunEvent::Started(e) => EventDraft::new(STARTED, e.encode_to_vec()),
            RunEvent::Scored(e) => EventDraft::new(CASE_SCORED, e.encode_to_vec()),
            RunEvent::Finished(e) => EventDraft::new(FINISHED, e.encode_to_vec()),
        }
    }

    fn decode(envelope: &EventEnvelope) -> Option<RunEvent> {
        let payload = envelope.payload.as_slice();
        match envelope.event_type.as_str() {
            STARTED => EvaluationRunStarted::decode(payload).ok().map(RunEvent::Started),
            CASE_SCORED => CaseScored::decode(payload).ok().map(RunEvent::Scored),
            FINISHED => EvaluationRunFinished::decode(payload)
                .ok()
                .map(RunEvent::Finished),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use promptops_proto::evaluation::v1::{MetricScore, MetricSpec, ResolvedTarget};

    use super::*;

    fn started() -> RunState {
        evolve(
            RunState::default(),
            &RunEvent::Started(EvaluationRunStarted {
                run_id: "r".into(),
                case_ids: vec!["a".into(), "b".into()],
                targets: vec![ResolvedTarget::default(), ResolvedTarget::default()],
                metrics: vec![MetricSpec {
                    kind: "bleu".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        )
    }

    fn result(case_id: &str, target: u32, score: Option<f64>) -> CaseResult {
        CaseResult {
            case_id: case_id.into(),
            target,
            scores: score
                .map(|value| MetricScore {
                    metric: "bleu".into(),
                    value,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            error: if score.is_none() {
                "provider failed".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }

    fn apply(state: RunState, command: RunCommand) -> RunState {
        decide(&state, command)
            .unwrap_or_default()
            .iter()
            .fold(state, evolve)
    }

    #[test]
    fn each_pair_is_scored_once() {
        let state = apply(started(), RunCommand::Score(result("a", 0, Some(50.0))));
        assert_eq!(
            decide(&state, RunCommand::Score(result("a", 0, Some(10.0)))),
            Ok(Vec::new())
        );
        assert_eq!(
            decide(&state, RunCommand::Score(result("zz", 0, Some(10.0)))),
            Ok(Vec::new())
        );
        assert_eq!(
            decide(&state, RunCommand::Score(result("a", 7, Some(10.0)))),
            Ok(Vec::new())
        );
        assert_eq!(
            state.pending(),
            [("a".to_owned(), 1), ("b".to_owned(), 0), ("b".to_owned(), 1)]
        );
    }

    #[test]
    fn completes_only_when_every_pair_is_scored() {
        let mut state = apply(started(), RunCommand::Score(result("a", 0, Some(40.0))));
        let finish = RunCommand::Finish {
            status: EvaluationRunStatus::Completed,
            error: String::new(),
            now_ms: 1,
        };
        assert_eq!(decide(&state, finish.clone()), Err(RunError::Incomplete(3)));
        for (case, target, score) in [("a", 1, Some(60.0)), ("b", 0, Some(80.0)), ("b", 1, None)] {
            state = apply(state, RunCommand::Score(result(case, target, score)));
        }
        let state = apply(state, finish.clone());
        assert_eq!(state.status(), EvaluationRunStatus::Completed);
        assert_eq!(state.failed(), 1);
        let aggregates = &state
            .finished
            .as_ref()
            .map(|f| f.aggregates.clone())
            .unwrap_or_default();
        assert_eq!(aggregates.len(), 2);
        assert!((aggregates[0].mean - 60.0).abs() < 1e-12 && aggregates[0].count == 2);
        assert!((aggregates[1].mean - 60.0).abs() < 1e-12 && aggregates[1].count == 1);
        assert_eq!(decide(&state, finish), Ok(Vec::new()));
        assert_eq!(
            decide(&state, RunCommand::Score(result("a", 0, Some(1.0)))),
            Ok(Vec::new())
        );
    }

    #[test]
    fn cancel_any_time_and_refusals() {
        let state = apply(
            started(),
            RunCommand::Finish {
                status: EvaluationRunStatus::Cancelled,
                error: "by ada".into(),
                now_ms: 1,
            },
        );
        assert_eq!(state.status(), EvaluationRunStatus::Cancelled);
        assert_eq!(
            decide(&RunState::default(), RunCommand::Score(result("a", 0, None))),
            Err(RunError::NotFound)
        );
        assert_eq!(
            decide(&started(), RunCommand::Start(EvaluationRunStarted::default())),
            Err(RunError::Exists)
        );
    }
}
