//! Runs evaluation runs: every pending case × target through the execution
//! service (acting for the run's starter with this service's credential),
//! scored and recorded one by one, at most `concurrency` at a time.
//!
//! A run's progress is its log: after a crash or a restart the runner
//! resumes each unfinished run with the pairs not yet scored. A pair whose
//! execution was in flight when the runner died was cancelled with it (the
//! execution service records it as cancelled) and runs again; it is scored
//! once, because the aggregate records one score per pair.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use promptops_eventlog::aggregate::{self, Loaded};
use promptops_eventlog::{AggregateRef, Context, EventLog};
use promptops_platform::authn::Authenticator;
use promptops_platform::caller::{Caller, acting_for, event_metadata};
use promptops_platform::db::unix_ms;
use promptops_platform::upstream::Upstream;
use promptops_proto::common::v1::Actor;
use promptops_proto::evaluation::v1::{CaseResult, DatasetCase, EvaluationRunStatus, MetricScore};
use promptops_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use promptops_proto::execution::v1::{EmbedRequest, ExecuteRequest, RunStatus};
use promptops_proto::prompts::v1::PromptRef;
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::evaluation_run::{EvaluationRun, MAX_OUTPUT_BYTES, RunCommand, RunState};
use crate::scoring::{self, Output};
use crate::{datasets, evaluation_run, read_model};

/// Attempts per pair when the execution service is unavailable.
const UNAVAILABLE_ATTEMPTS: u32 = 4;

#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    log: EventLog,
    execution: ExecutionServiceClient<Upstream>,
    auth: Authenticator,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    /// Runs being driven by this process, with their stop switches.
    active: Mutex<HashMap<String, CancellationToken>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

pub fn run_ref(org_id: &str, run_id: &str) -> Option<AggregateRef> {
    AggregateRef::new(
        Context::Evaluation,
        org_id,
        evaluation_run::AGGREGATE_TYPE,
        run_id,
    )
    .ok()
}

impl Runner {
    pub fn new(
        log: EventLog,
        execution: ExecutionServiceClient<Upstream>,
        auth: Authenticator,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                log,
                execution,
                auth,
                tasks,
                shutdown,
                active: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Drives the run in the background unless this process already does.
    pub fn launch(&self, org_id: &str, run_id: &str) {
        let stop = {
            let Ok(mut active) = self.inner.active.lock() else {
                return;
            };
            if active.contains_key(run_id) {
                return;
            }
            let stop = self.inner.shutdown.child_token();
            active.insert(run_id.to_owned(), stop.clone());
            stop
        };
        let runner = self.clone();
        let (org_id, run_id) = (org_id.to_owned(), run_id.to_owned());
        self.inner.tasks.spawn(async move {
            let span = tracing::info_span!("evaluation_run", run_id = %run_id, org_id = %org_id);
            let outcome = tracing::Instrument::instrument(runner.drive(&org_id, &run_id, &stop), span).await;
            if let Err(err) = outcome {
                tracing::warn!(%run_id, %err, "evaluation run stopped; it resumes at the next start");
                metrics::counter!("evaluation_run_interruptions_total").increment(1);
            }
            if let Ok(mut active) = runner.inner.active.lock() {
                active.remove(&run_id);
            }
        });
    }

    /// Stops driving the run here (its cancellation is recorded by the API).
    pub fn stop(&self, run_id: &str) {
        if let Ok(active) = self.inner.active.lock()
            && let Some(stop) = active.get(run_id)
        {
            stop.cancel();
        }
    }

    /// Launches every unfinished run, once the read model has caught up
    /// with the log as it was at start.
    pub async fn resume_unfinished(&self, db: &AnyPool) {
        let target = match self.inner.log.last_sequence(Context::Evaluation).await {
            Ok(sequence) => sequence,
            Err(err) => {
                tracing::warn!(%err, "cannot read the log to resume evaluation runs");
                return;
            }
        };
        let position = promptops_proto::common::v1::LogPosition {
            stream: Context::Evaluation.stream_name().to_owned(),
            sequence: target,
        };
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            match promptops_platform::read_your_write::wait_for(db, read_model::PROJECTION, Some(&position))
                .await
            {
                Ok(()) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        match read_model::unfinished_runs(db).await {
            Ok(runs) => {
                for (org_id, run_id) in runs {
                    tracing::info!(%run_id, "resuming evaluation run");
                    self.launch(&org_id, &run_id);
                }
            }
            Err(err) => tracing::warn!(%err, "cannot list unfinished evaluation runs"),
        }
    }

    async fn drive(&self, org_id: &str, run_id: &str, stop: &CancellationToken) -> Result<(), String> {
        let aggregate = run_ref(org_id, run_id).ok_or("bad run reference")?;
        let log = &self.inner.log;
        let mut known: Loaded<RunState> = aggregate::load::<EvaluationRun>(log, &aggregate)
            .await
            .map_err(|e| e.to_string())?;
        let Some(started) = known.state.started.clone() else {
            return Err("no such run".into());
        };
        if known.state.is_finished() {
            return Ok(());
        }
        let actor = started.actor.clone().unwrap_or_default();
        let metadata = event_metadata(Actor {
            kind: promptops_proto::common::v1::ActorKind::Service as i32,
            id: "evaluation".into(),
        });
        let caller = Caller::new(
            org_id,
            promptops_proto::common::v1::ActorKind::try_from(actor.kind).unwrap_or_default(),
            actor.id.clone(),
            promptops_auth::roles::Role::parse(&started.role).ok_or("the run's role is unknown")?,
            started.scopes.clone(),
        );
        let credential = self.inner.auth.service_credential().map_err(|e| e.message)?;
        let dataset = AggregateRef::new(
            Context::Evaluation,
            org_id,
            datasets::AGGREGATE_TYPE,
            &started.dataset_id,
        )
        .map_err(|e| e.to_string())?;
        let events = log.read_aggregate(&dataset).await.map_err(|e| e.to_string())?;
        let cases: HashMap<String, DatasetCase> = datasets::cases_of(&events, started.dataset_version)
            .ok_or("the dataset version is gone")?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
        let metrics = scoring::compile(&started.metrics).map_err(|v| format!("{v:?}"))?;

        let pending = known.state.pending();
        tracing::info!(
            pending = pending.len(),
            total = known.state.total(),
            "evaluation run driving"
        );
        let concurrency = started.concurrency.clamp(1, crate::grpc::MAX_CONCURRENCY) as usize;
        let acting = Acting {
            run_id,
            credential: &credential,
            caller: &caller,
            metrics: &metrics,
            specs: &started.metrics,
        };
        let mut results = futures::stream::iter(pending.into_iter().filter_map(|(case_id, target)| {
            let case = cases.get(&case_id)?.clone();
            let resolved = started.targets.get(target as usize)?.clone();
            Some(self.run_pair(&acting, case, target, resolved))
        }))
        .buffer_unordered(concurrency);
        loop {
            let result = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    tracing::info!("evaluation run stopped here (cancelled or shutting down)");
                    return Ok(());
                }
                next = results.next() => match next {
                    Some(result) => result,
                    None => break,
                },
            };
            let executed = aggregate::execute_from::<EvaluationRun>(
                log,
                &aggregate,
                known,
                RunCommand::Score(result),
                &metadata,
            )
            .await
            .map_err(|e| format!("cannot record a case: {e}"))?;
            if executed.state.is_finished() {
                // Cancelled meanwhile (by the API, maybe on another replica).
                return Ok(());
            }
            known = Loaded {
                version: 0,
                last_sequence: executed.last_sequence,
                first_occurred_at: executed.first_occurred_at,
                state: executed.state,
            };
            metrics::counter!("evaluation_cases_scored_total").increment(1);
        }
        drop(results);
        aggregate::execute_from::<EvaluationRun>(
            log,
            &aggregate,
            known,
            RunCommand::Finish {
                status: EvaluationRunStatus::Completed,
                error: String::new(),
                now_ms: unix_ms(),
            },
            &metadata,
        )
        .await
        .map_err(|e| format!("cannot record the end: {e}"))?;
        metrics::counter!("evaluation_runs_completed_total").increment(1);
        Ok(())
    }

    /// Executes one case on one target and scores the output.
    async fn run_pair(
        &self,
        acting: &Acting<'_>,
        case: DatasetCase,
        target: u32,
        resolved: promptops_proto::evaluation::v1::ResolvedTarget,
    ) -> CaseResult {
        let Acting {
            credential,
            caller,
            metrics,
            specs,
            ..
        } = *acting;
        let request = ExecuteRequest {
            prompt: Some(PromptRef {
                prompt_id: resolved.prompt_id.clone(),
                ..Default::default()
            }),
            version: resolved.prompt_version,
            variables: case.variables.clone(),
            model: resolved.model.clone(),
            run_id: execution_run_id(acting.run_id, &case.id, target, "target"),
            ..Default::default()
        };
        let mut result = CaseResult {
            case_id: case.id.clone(),
            target,
            ..Default::default()
        };
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let outcome = self
                .inner
                .execution
                .clone()
                .execute(acting_for(credential, caller, request.clone()))
                .await;
            match outcome {
                Err(status)
                    if status.code() == tonic::Code::Unavailable && attempt < UNAVAILABLE_ATTEMPTS =>
                {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                other => break other,
            }
        };
        let run = match response {
            Ok(response) => response.into_inner().run.unwrap_or_default(),
            Err(status) => {
                result.error = format!("{:?}: {}", status.code(), status.message());
                return result;
            }
        };
        result.run_id = run.run_id.clone();
        result.latency_us = run.latency_us;
        result.cost_nano_usd = run.cost_nano_usd;
        result.output = scoring::truncate(&run.output, MAX_OUTPUT_BYTES).to_owned();
        if run.status != RunStatus::Completed as i32 {
            result.error = if run.error.is_empty() {
                "the execution did not complete".into()
            } else {
                run.error
            };
            return result;
        }
        let output = Output {
            text: &run.output,
            expected: case.expected.as_deref(),
            latency_us: run.latency_us,
            cost_nano_usd: run.cost_nano_usd,
            variables: Some(&case.variables),
        };
        (result.scores, result.notes) = scoring::score_all(metrics, &output);
        for (metric, spec) in metrics.iter().zip(specs).filter(|(m, _)| m.is_judge()) {
            match self
                .judge(acting, spec, &metric.name, &case, target, &run.output)
                .await
            {
                Ok((value, reasoning, run_id)) => result.scores.push(MetricScore {
                    metric: metric.name.clone(),
                    value,
                    reasoning,
                    run_id,
                }),
                Err(note) => result.notes.push(format!("{}: {note}", metric.name)),
            }
        }
        if let Some(expected) = case.expected.as_deref() {
            for (metric, spec) in metrics.iter().zip(specs).filter(|(m, _)| m.is_embedding()) {
                match self
                    .similarity(acting, &spec.embedding_model, &run.output, expected)
                    .await
                {
                    Ok((value, run_id)) => result.scores.push(MetricScore {
                        metric: metric.name.clone(),
                        value,
                        run_id,
                        ..Default::default()
                    }),
                    Err(note) => result.notes.push(format!("{}: {note}", metric.name)),
                }
            }
        }
        result
    }

    /// The cosine of the output's and the expected output's embeddings, and
    /// the embedding run's id.
    async fn similarity(
        &self,
        acting: &Acting<'_>,
        model: &str,
        output: &str,
        expected: &str,
    ) -> Result<(f64, String), String> {
        let request = EmbedRequest {
            model: model.to_owned(),
            inputs: vec![output.to_owned(), expected.to_owned()],
        };
        let answer = self
            .inner
            .execution
            .clone()
            .embed(acting_for(acting.credential, acting.caller, request))
            .await
            .map_err(|status| format!("the embeddings failed: {}", status.message()))?
            .into_inner();
        match answer.embeddings.as_slice() {
            [a, b] => Ok((
                scoring::cosine(&a.values, &b.values),
                answer.run.map(|r| r.run_id).unwrap_or_default(),
            )),
            other => Err(format!("{} embeddings for 2 texts", other.len())),
        }
    }

    /// Runs the judge's rubric prompt on one output: its score, reasoning
    /// and run id, or why there is no score.
    async fn judge(
        &self,
        acting: &Acting<'_>,
        spec: &promptops_proto::evaluation::v1::MetricSpec,
        name: &str,
        case: &DatasetCase,
        target: u32,
        output: &str,
    ) -> Result<(f64, String, String), String> {
        let Acting {
            credential, caller, ..
        } = *acting;
        let mut variables = case.variables.clone();
        variables.insert("output".into(), output.to_owned());
        variables.insert("expected".into(), case.expected.clone().unwrap_or_default());
        let request = ExecuteRequest {
            prompt: spec.judge_prompt.clone(),
            version: spec.judge_version,
            variables,
            model: spec.judge_model.clone(),
            run_id: execution_run_id(acting.run_id, &case.id, target, &format!("judge:{name}")),
            ..Default::default()
        };
        let run = self
            .inner
            .execution
            .clone()
            .execute(acting_for(credential, caller, request))
            .await
            .map_err(|status| format!("the judge's call failed: {}", status.message()))?
            .into_inner()
            .run
            .unwrap_or_default();
        if run.status != RunStatus::Completed as i32 {
            return Err(format!("the judge's run did not complete: {}", run.error));
        }
        let (score, reasoning) = scoring::parse_judgement(&run.output).ok_or_else(|| {
            format!(
                "the judge gave no score: {:?}",
                scoring::truncate(&run.output, 200)
            )
        })?;
        Ok((score, reasoning, run.run_id))
    }
}

/// Who a run's executions act for, and how its outputs are scored.
#[derive(Clone, Copy)]
struct Acting<'a> {
    /// The evaluation run.
    run_id: &'a str,
    credential: &'a str,
    caller: &'a Caller,
    metrics: &'a [scoring::Metric],
    specs: &'a [promptops_proto::evaluation::v1::MetricSpec],
}

/// The execution run id of one case on one target (`purpose` names a
/// judge's call): the same on every attempt, so an execution that finished
/// while this runner was down is found and not run again.
pub fn execution_run_id(evaluation_run_id: &str, case_id: &str, target: u32, purpose: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(
        format!("promptops.evaluation.execution\0{evaluation_run_id}\0{case_id}\0{target}\0{purpose}")
            .as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}
