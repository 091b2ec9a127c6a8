//! Around every provider call: a circuit breaker per org and model, a
//! concurrency limit per org and provider, and fallback models. The numbers
//! are the provider's [`CallLimits`] (set with the provider; defaults 5
//! failures, 30 s, 64 calls).
//!
//! - **Breaker**: after `failures_to_open` provider failures in a row
//!   (after retries) a model's circuit opens for `open_for`: calls to it fail
//!   at once (or go to a fallback). Then one trial call is let through
//!   (half-open): success closes the circuit, failure opens it again.
//! - **Limit**: at most `max_concurrent_calls` calls in flight per org
//!   and provider; more wait their turn (within the run timeout).
//!
//! Both are held per replica: with N execution replicas an org may have up
//! to N × `max_concurrent_calls` calls in flight, and each replica's breaker
//! learns of a failing model on its own.
//! - **Fallbacks**: when a model fails (or its circuit is open) before any
//!   output was sent, the next model in the run's fallback list is tried; the
//!   run records the model that answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use promptops_proto::execution::v1::RateLimits;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::mock::{CallError, Completion};
use crate::models::{CallLimits, ModelSpec};
use crate::providers::{self, CallRequest};

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    /// A half-open trial is in flight.
    trial: bool,
}

/// What a breaker says about a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Closed,
    /// The one call allowed after the open period.
    Trial,
    Open {
        retry_in: Duration,
    },
}

/// Breakers and limits of one replica.
#[derive(Debug, Default)]
pub struct Resilience {
    breakers: Mutex<HashMap<(String, String), Breaker>>,
    /// The last rate-limit headers per org and model.
    rate_limits: Mutex<HashMap<(String, String), RateLimits>>,
    limits: Mutex<HashMap<(String, String), CallLimit>>,
}

/// The semaphore of one org and provider, and the size it was made with.
#[derive(Debug)]
struct CallLimit {
    semaphore: Arc<Semaphore>,
    size: usize,
}

impl Resilience {
    /// May a call to `model` of `org_id` go ahead?
    pub fn admit(&self, org_id: &str, model: &str, now: Instant) -> Admission {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let breaker = breakers.entry((org_id.to_owned(), model.to_owned())).or_default();
        match breaker.open_until {
            None => Admission::Closed,
            Some(until) if now < until => Admission::Open {
                retry_in: until - now,
            },
            Some(_) if breaker.trial => Admission::Open {
                retry_in: Duration::from_secs(1),
            },
            Some(_) => {
                breaker.trial = true;
                Admission::Trial
            }
        }
    }

    /// The outcome of an admitted call (`Cancelled` outcomes are not recorded).
    pub fn record(&self, org_id: &str, model: &str, success: bool, now: Instant, limits: &CallLimits) {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let breaker = breakers.entry((org_id.to_owned(), model.to_owned())).or_default();
        breaker.trial = false;
        if success {
            *breaker = Breaker::default();
        } else {
            breaker.failures += 1;
            if breaker.open_until.is_some() || breaker.failures >= limits.failures_to_open {
                breaker.open_until = Some(now + limits.open_for);
                metrics::counter!("promptops_circuit_opened_total", "model" => model.to_owned()).increment(1);
            }
        }
        metrics::gauge!("promptops_circuit_open", "model" => model.to_owned())
            .set(if breaker.open_until.is_some() { 1.0 } else { 0.0 });
    }

    /// The provider's last rate-limit headers for `model` of `org_id`.
    pub fn rate_limits(&self, org_id: &str, model: &str) -> Option<RateLimits> {
        self.rate_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(org_id.to_owned(), model.to_owned()))
            .cloned()
    }

    fn observe(&self, org_id: &str, model: &str, limits: RateLimits) {
        for (kind, remaining) in [
            ("requests", limits.remaining_requests),
            ("tokens", limits.remaining_tokens),
        ] {
            if let Some(remaining) = remaining {
                metrics::gauge!(
                    "promptops_provider_ratelimit_remaining",
                    "model" => model.to_owned(),
                    "kind" => kind
                )
                .set(remaining as f64);
            }
        }
        self.rate_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((org_id.to_owned(), model.to_owned()), limits);
    }

    /// The semaphore bounding calls of `org_id` to `provider`. A changed
    /// size takes effect with a new semaphore: calls admitted by the old
    /// one finish, so for a moment both sizes' calls may be in flight.
    fn limit(&self, org_id: &str, provider: &str, size: usize) -> Arc<Semaphore> {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = limits
            .entry((org_id.to_owned(), provider.to_owned()))
            .or_insert_with(|| CallLimit {
                semaphore: Arc::new(Semaphore::new(size)),
                size,
            });
        if entry.size != size {
            *entry = CallLimit {
                semaphore: Arc::new(Semaphore::new(size)),
                size,
            };
        }
        entry.semaphore.clone()
    }
}

/// Calls the first model that answers: `candidates[0]`, then its
/// fallbacks, each through its breaker and its provider's limit. Returns the
/// outcome and the model that produced it.
pub async fn complete(
    resilience: &Resilience,
    client: &crate::providers::ProviderClient,
    org_id: &str,
    candidates: &[Arc<ModelSpec>],
    request: CallRequest<'_>,
    deltas: &mpsc::Sender<String>,
    cancel: &CancellationToken,
) -> (Result<Completion, CallError>, Option<Arc<ModelSpec>>) {
    let mut last_error = CallError::Provider {
        message: "no model to run".into(),
        retryable: false,
        retry_after: None,
    };
    let mut tried = Vec::new();
    for spec in candidates {
        if let Admission::Open { retry_in } = resilience.admit(org_id, &spec.id, Instant::now()) {
            tried.push(format!(
                "{}: circuit open for {} s more",
                spec.id,
                retry_in.as_secs().max(1)
            ));
            last_error = CallError::Provider {
                message: tried.join("; "),
                retryable: true,
                retry_after: Some(retry_in),
            };
            continue;
        }
        let limit = resilience.limit(org_id, spec.provider(), spec.limits.max_concurrent_calls);
        let permit = tokio::select! {
            () = cancel.cancelled() => {
                return (Err(CallError::Cancelled { partial: String::new(), output_tokens: 0 }), None);
            }
            permit = limit.acquire_owned() => permit,
        };
        let mut report = providers::CallReport::default();
        let result = providers::complete(client, spec, request, deltas, cancel, &mut report).await;
        drop(permit);
        if let Some(limits) = report.rate_limits {
            resilience.observe(org_id, &spec.id, limits);
        }
        match &result {
            Ok(_) => resilience.record(org_id, &spec.id, true, Instant::now(), &spec.limits),
            Err(CallError::Provider { message, .. }) => {
                resilience.record(org_id, &spec.id, false, Instant::now(), &spec.limits);
                if !report.sent_any {
                    tried.push(format!("{}: {message}", spec.id));
                    if candidates.len() > 1 {
                        metrics::counter!("promptops_fallbacks_total", "model" => spec.id.clone())
                            .increment(1);
                    }
                    last_error = CallError::Provider {
                        message: tried.join("; "),
                        retryable: false,
                        retry_after: None,
                    };
                    continue;
                }
            }
            Err(CallError::Cancelled { .. }) => {}
        }
        return (result, Some(spec.clone()));
    }
    (Err(last_error), None)
}

#[cfg(test)]
mod tests {
    use promptops_proto::execution::v1::Parameters;
    use promptops_proto::prompts::v1::ChatMessage;

    use super::*;

    #[test]
    fn a_breaker_opens_after_repeated_failures_then_lets_one_trial_through() {
        let r = Resilience::default();
        let limits = CallLimits {
            failures_to_open: 3,
            open_for: Duration::from_secs(10),
            ..CallLimits::DEFAULT
        };
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(r.admit("o", "m", t0), Admission::Closed);
            r.record("o", "m", false, t0, &limits);
        }
        assert_eq!(r.admit("o", "m", t0), Admission::Closed);
        r.record("o", "m", false, t0, &limits);
        assert!(matches!(r.admit("o", "m", t0), Admission::Open { .. }));
        assert_eq!(r.admit("other-org", "m", t0), Admission::Closed, "per org");
        let later = t0 + Duration::from_secs(11);
        assert_eq!(r.admit("o", "m", later), Admission::Trial);
        assert!(
            matches!(r.admit("o", "m", later), Admission::Open { .. }),
            "one trial at a time"
        );
        // The trial fails: open again at once.
        r.record("o", "m", false, later, &limits);
        assert!(matches!(r.admit("o", "m", later), Admission::Open { .. }));
        let much_later = later + Duration::from_secs(11);
        assert_eq!(r.admit("o", "m", much_later), Admission::Trial);
        r.record("o", "m", true, much_later, &limits);
        assert_eq!(
            r.admit("o", "m", much_later),
            Admission::Closed,
            "a successful trial closes it"
        );
    }

    #[tokio::test]
    async fn a_failing_model_falls_back_and_the_answering_model_is_named() {
        let fail = crate::models::find("mock/fail").unwrap().clone();
        let echo = crate::models::find("mock/echo").unwrap().clone();
        let messages = vec![ChatMessage {
            role: promptops_proto::prompts::v1::ChatRole::User as i32,
            content: "hi".into(),
        }];
        let (tx, _rx) = mpsc::channel(16);
        let parameters = Parameters::default();
        let request = CallRequest {
            messages: &messages,
            parameters: &parameters,
            streamed: false,
        };
        let r = Resilience::default();
        let client = crate::providers::ProviderClient::new(std::sync::Arc::default());
        let (result, used) = complete(
            &r,
            &client,
            "o",
            &[fail.clone(), echo],
            request,
            &tx,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(result.unwrap().output, "hi");
        assert_eq!(used.unwrap().id, "mock/echo");
        let (result, used) =
            complete(&r, &client, "o", &[fail], request, &tx, &CancellationToken::new()).await;
        let Err(CallError::Provider { message, .. }) = result else {
            panic!("expected a provider error");
        };
        assert!(message.starts_with("mock/fail: "), "{message}");
        assert!(used.is_none());
    }
}
