//! What an event means for the audit trail: an entry (action, outcome, a
//! one-line summary, where the request came from) or nothing, when the event
//! only completes another one's mutation.
//!
//! Folded into another entry (no entry of their own):
//! - `EmailClaimed` (part of `user.registered`), the founder's `MemberJoined`
//!   (part of `org.created`: it has no invitation);
//! - `ExecutionStarted` (the run's entry is its end: completed, failed or
//!   cancelled, which carries the outcome), `TurnStarted` / `TurnEnded` (a
//!   message's run is the entry), `DataKeyCreated` (part of the first
//!   `provider.set`), `BudgetCreditGranted` / `BudgetCreditReturned` (a
//!   replica's bookkeeping of the budget credit its runs use);
//! - `CaseScored`, `DatasetCasesStaged` (progress and chunks of an evaluation
//!   run or a dataset version, whose start and end are entries).
//!
//! A summary never shows a secret: each known event type says what it may
//! show (never a sealed credential, a wrapped key, a prompt's output or a
//! variable's value); unknown types show only their name.

use promptops_eventlog::EventEnvelope;
use promptops_proto::billing::v1 as billing;
use promptops_proto::evaluation::v1 as evaluation;
use promptops_proto::execution::v1 as execution;
use promptops_proto::identity::v1 as identity;
use promptops_proto::prompts::v1 as prompts;
use prost::Message;

pub const SUCCESS: &str = "success";
pub const FAILURE: &str = "failure";
pub const CANCELLED: &str = "cancelled";

/// The audit entry an event makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub action: String,
    pub outcome: &'static str,
    pub summary: String,
    pub client_address: String,
    pub user_agent: String,
}

/// `None` when the event is folded into another entry.
pub fn classify(envelope: &EventEnvelope) -> Option<Classified> {
    let name = envelope
        .event_type
        .rsplit('.')
        .next()
        .unwrap_or(&envelope.event_type);
    let mut entry = Classified {
        action: action_of(&envelope.event_type),
        outcome: SUCCESS,
        summary: String::new(),
        client_address: String::new(),
        user_agent: String::new(),
    };
    let p = envelope.payload.as_slice();
    entry.summary = match envelope.event_type.as_str() {
        // identity
        "promptops.identity.v1.EmailClaimed"
        | "promptops.execution.v1.ExecutionStarted"
        | "promptops.execution.v1.TurnStarted"
        | "promptops.execution.v1.TurnEnded"
        | "promptops.execution.v1.DataKeyCreated"
        // A replica's budget credit: bookkeeping of the runs it admits.
        | "promptops.execution.v1.BudgetCreditGranted"
        | "promptops.execution.v1.BudgetCreditReturned"
        | "promptops.evaluation.v1.CaseScored"
        | "promptops.evaluation.v1.DatasetCasesStaged" => return None,
        "promptops.identity.v1.UserRegistered" => show(p, |e: identity::UserRegistered| {
            format!("registered user {}", e.user_id)
        }),
        "promptops.identity.v1.UserPasswordChanged" => "changed the password".to_owned(),
        "promptops.identity.v1.UserLoginFailed" => {
            entry.outcome = FAILURE;
            show(p, |e: identity::UserLoginFailed| {
                entry.client_address = e.client_address.clone();
                format!("login failed ({})", e.reason)
            })
        }
        "promptops.identity.v1.OrgCreated" => show(p, |e: identity::OrgCreated| {
            format!("created org {:?} owned by {}", e.name, e.owner_user_id)
        }),
        "promptops.identity.v1.MemberInvited" => show(p, |e: identity::MemberInvited| {
            format!(
                "invited a member as {} (invitation {})",
                role(e.role),
                e.invitation_id
            )
        }),
        "promptops.identity.v1.MemberJoined" => {
            let joined = identity::MemberJoined::decode(p).ok()?;
            if joined.invitation_id.is_empty() {
                return None;
            }
            format!(
                "{} joined as {} (invitation {})",
                joined.user_id,
                role(joined.role),
                joined.invitation_id
            )
        }
        "promptops.identity.v1.MemberRoleChanged" => show(p, |e: identity::MemberRoleChanged| {
            format!(
                "changed {}'s role from {} to {}",
                e.user_id,
                role(e.from),
                role(e.to)
            )
        }),
        "promptops.identity.v1.MemberRemoved" => show(p, |e: identity::MemberRemoved| {
            format!("removed member {}", e.user_id)
        }),
        "promptops.identity.v1.GrantAdded" => show(p, |e: identity::GrantAdded| {
            format!(
                "granted {} {} on {} {:?}",
                e.user_id,
                role(e.role),
                e.resource_kind,
                e.resource
            )
        }),
        "promptops.identity.v1.GrantRemoved" => show(p, |e: identity::GrantRemoved| {
            format!(
                "removed {}'s grant on {} {:?}",
                e.user_id, e.resource_kind, e.resource
            )
        }),
        "promptops.identity.v1.SessionStarted" => show(p, |e: identity::SessionStarted| {
            entry.client_address = e.client_address.clone();
            entry.user_agent = e.user_agent.clone();
            format!("{} signed in (session {})", e.user_id, e.session_id)
        }),
        "promptops.identity.v1.SessionRefreshed" => show(p, |e: identity::SessionRefreshed| {
            format!("refreshed session {} (generation {})", e.session_id, e.generation)
        }),
        "promptops.identity.v1.SessionRevoked" => show(p, |e: identity::SessionRevoked| {
            format!("ended session {} ({})", e.session_id, e.reason)
        }),
        "promptops.identity.v1.RefreshReuseDetected" => {
            entry.outcome = FAILURE;
            show(p, |e: identity::RefreshReuseDetected| {
                format!(
                    "a spent refresh token (generation {}) of session {} was presented again",
                    e.generation, e.session_id
                )
            })
        }
        "promptops.identity.v1.ApiKeyCreated" => show(p, |e: identity::ApiKeyCreated| {
            format!(
                "created API key {:?} ({}) as {} with scopes {}",
                e.name,
                e.key_id,
                role(e.role),
                e.scopes.join(",")
            )
        }),
        "promptops.identity.v1.ApiKeyRotated" => show(p, |e: identity::ApiKeyRotated| {
            format!("rotated API key {}", e.key_id)
        }),
        "promptops.identity.v1.ApiKeyRevoked" => show(p, |e: identity::ApiKeyRevoked| {
            format!("revoked API key {}", e.key_id)
        }),
        "promptops.identity.v1.RetentionPolicySet" => show(p, |e: identity::RetentionPolicySet| {
            if e.audit_days == 0 {
                "audit retention set to the default".to_owned()
            } else {
                format!("audit retention set to {} days", e.audit_days)
            }
        }),
        // prompts
        "promptops.prompts.v1.PromptCreated" => show(p, |e: prompts::PromptCreated| {
            let folder = if e.folder.is_empty() {
                String::new()
            } else {
                format!(" in {}", e.folder)
            };
            format!("created prompt {:?}{folder}", e.name)
        }),
        "promptops.prompts.v1.VersionCreated" => show(p, |e: prompts::VersionCreated| {
            let v = e.version.unwrap_or_default();
            let copied = if v.copied_from == 0 {
                String::new()
            } else {
                format!(" (copy of version {})", v.copied_from)
            };
            format!("saved version {}{copied}: {:?}", v.number, v.commit_message)
        }),
        "promptops.prompts.v1.LabelMoved" => show(p, |e: prompts::LabelMoved| {
            format!(
                "moved label {:?} from version {} to {}{}",
                e.label,
                e.previous_version,
                e.version,
                reason(&e.reason)
            )
        }),
        "promptops.prompts.v1.LabelRemoved" => show(p, |e: prompts::LabelRemoved| {
            format!(
                "removed label {:?} (was version {}){}",
                e.label,
                e.previous_version,
                reason(&e.reason)
            )
        }),
        "promptops.prompts.v1.PromptDetailsChanged" => "changed the description or tags".to_owned(),
        "promptops.prompts.v1.PromptArchived" => show(p, |e: prompts::PromptArchived| {
            format!("archived the prompt{}", reason(&e.reason))
        }),
        "promptops.prompts.v1.PromptRestored" => show(p, |e: prompts::PromptRestored| {
            format!("restored the prompt{}", reason(&e.reason))
        }),
        "promptops.prompts.v1.LabelPolicySet" => show(p, |e: prompts::LabelPolicySet| {
            format!("protected labels set to {:?}", e.protected_labels)
        }),
        // execution
        "promptops.execution.v1.ExecutionCompleted" => show(p, |e: execution::ExecutionCompleted| {
            let usage = e.usage.unwrap_or_default();
            format!(
                "run on {} completed: {} tokens in, {} out, {}, {} ms",
                e.model,
                usage.input_tokens,
                usage.output_tokens,
                cost(e.cost_nano_usd),
                e.latency_us / 1000
            )
        }),
        "promptops.execution.v1.ExecutionFailed" => {
            entry.outcome = FAILURE;
            show(p, |e: execution::ExecutionFailed| {
                format!("run failed ({})", e.error_class)
            })
        }
        "promptops.execution.v1.ExecutionCancelled" => {
            entry.outcome = CANCELLED;
            show(p, |e: execution::ExecutionCancelled| {
                format!(
                    "run cancelled by the client after {} ms ({})",
                    e.latency_us / 1000,
                    cost(e.cost_nano_usd)
                )
            })
        }
        "promptops.execution.v1.ConversationStarted" => show(p, |e: execution::ConversationStarted| {
            format!("started conversation {:?} on {}", e.title, e.model)
        }),
        "promptops.execution.v1.ProviderSet" => show(p, |e: execution::ProviderSet| {
            let credential = if e.credential_hint.is_empty() {
                String::new()
            } else {
                format!(", credential {}", e.credential_hint)
            };
            format!("set provider {:?} at {}{credential}", e.name, e.base_url)
        }),
        "promptops.execution.v1.ProviderRemoved" => show(p, |e: execution::ProviderRemoved| {
            format!("removed provider {:?}", e.name)
        }),
        "promptops.execution.v1.ModelSet" => show(p, |e: execution::ModelSet| {
            format!(
                "set model {} (upstream {:?}, input {} / output {} per 1M tokens)",
                e.id,
                e.upstream_model,
                usd(e.input_price_per_mtok),
                usd(e.output_price_per_mtok)
            )
        }),
        "promptops.execution.v1.ModelRemoved" => {
            show(p, |e: execution::ModelRemoved| format!("removed model {}", e.id))
        }
        // billing
        "promptops.billing.v1.PriceScheduled" => show(p, |e: billing::PriceScheduled| {
            let prices = e.prices.unwrap_or_default();
            format!(
                "scheduled a price for {} from {} ms: input {} / output {} / cached input {} per 1M tokens",
                e.model,
                e.effective_from_ms,
                usd(prices.input_per_mtok),
                usd(prices.output_per_mtok),
                usd(prices.cached_input_per_mtok)
            )
        }),
        "promptops.billing.v1.ProjectSet" => show(p, |e: billing::ProjectSet| {
            format!("set project {:?} ({} API keys)", e.name, e.api_keys.len())
        }),
        "promptops.billing.v1.ProjectRemoved" => {
            show(p, |e: billing::ProjectRemoved| format!("removed project {:?}", e.name))
        }
        "promptops.billing.v1.BudgetSet" => show(p, |e: billing::BudgetSet| {
            let b = e.budget.unwrap_or_default();
            format!(
                "set {} budget {:?} ({}): limit {} per {:?}, {:?} {}",
                if b.hard { "hard" } else { "soft" },
                b.id,
                b.name,
                b.limit,
                b.period(),
                b.scope(),
                b.target
            )
        }),
        "promptops.billing.v1.BudgetRemoved" => {
            show(p, |e: billing::BudgetRemoved| format!("removed budget {:?}", e.budget_id))
        }
        "promptops.billing.v1.BudgetThresholdCrossed" => show(p, |e: billing::BudgetThresholdCrossed| {
            format!(
                "budget {:?} reached {}% ({} of {})",
                e.budget_id, e.percent, e.used, e.limit
            )
        }),
        "promptops.billing.v1.SpendAnomalyDetected" => show(p, |e: billing::SpendAnomalyDetected| {
            format!(
                "spend on {} ({} nano-USD) is far above the {}-day mean ({})",
                e.day, e.spend_nano_usd, e.baseline_days, e.baseline_mean_nano_usd
            )
        }),
        // evaluation
        "promptops.evaluation.v1.DatasetCreated" => show(p, |e: evaluation::DatasetCreated| {
            format!("created dataset {:?}", e.name)
        }),
        "promptops.evaluation.v1.DatasetVersionAdded" => show(p, |e: evaluation::DatasetVersionAdded| {
            format!("added dataset version {} ({} cases)", e.version, e.case_count)
        }),
        "promptops.evaluation.v1.EvaluationRunStarted" => show(p, |e: evaluation::EvaluationRunStarted| {
            format!(
                "started evaluation run {:?}: {} cases × {} targets on dataset version {}",
                e.name,
                e.case_ids.len(),
                e.targets.len(),
                e.dataset_version
            )
        }),
        "promptops.evaluation.v1.EvaluationRunFinished" => {
            let finished = evaluation::EvaluationRunFinished::decode(p).ok();
            let status = finished
                .as_ref()
                .and_then(|f| evaluation::EvaluationRunStatus::try_from(f.status).ok());
            let (outcome, word) = match status {
                Some(evaluation::EvaluationRunStatus::Completed) => (SUCCESS, "completed"),
                Some(evaluation::EvaluationRunStatus::Cancelled) => (CANCELLED, "cancelled"),
                _ => (FAILURE, "failed"),
            };
            entry.outcome = outcome;
            entry.action = format!("evaluation.run.{word}");
            match finished {
                Some(f) if !f.error.is_empty() => format!("evaluation run {word}: {}", f.error),
                Some(_) => format!("evaluation run {word}"),
                None => unreadable(envelope),
            }
        }
        _ => name.to_owned(),
    };
    // Where the request came from: as the event recorded it (sign-ins and
    // failed logins carry it in their payload too).
    if entry.client_address.is_empty() {
        entry.client_address.clone_from(&envelope.client_address);
    }
    if entry.user_agent.is_empty() {
        entry.user_agent.clone_from(&envelope.user_agent);
    }
    Some(entry)
}

/// `promptops.prompts.v1.PromptVersionCreated` → `prompt.version.created`.
pub fn action_of(event_type: &str) -> String {
    let name = event_type.rsplit('.').next().unwrap_or(event_type);
    let mut action = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                action.push('.');
            }
            action.extend(c.to_lowercase());
        } else {
            action.push(c);
        }
    }
    action
}

fn show<M: Message + Default>(payload: &[u8], describe: impl FnOnce(M) -> String) -> String {
    match M::decode(payload) {
        Ok(message) => describe(message),
        Err(_) => "(payload unreadable)".to_owned(),
    }
}

fn unreadable(envelope: &EventEnvelope) -> String {
    format!("{} (payload unreadable)", envelope.event_type)
}

fn reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason:?}")
    }
}

fn role(value: i32) -> &'static str {
    match identity::Role::try_from(value).unwrap_or(identity::Role::Unspecified) {
        identity::Role::Owner => "owner",
        identity::Role::Admin => "admin",
        identity::Role::Editor => "editor",
        identity::Role::Viewer => "viewer",
        identity::Role::Unspecified => "no role",
    }
}

/// Nano-USD (a cost) as `$0.000058000`, exactly.
fn cost(nano: i64) -> String {
    format!("${}", promptops_account::prices::usd_from_nano(nano))
}

/// Micro-USD per 1M tokens (a price) as `$2.500000`, exactly.
fn usd(micro: i64) -> String {
    format!("${}", promptops_account::prices::usd_from_micro(micro))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(event_type: &str, payload: impl Message) -> EventEnvelope {
        EventEnvelope {
            event_type: event_type.to_owned(),
            payload: payload.encode_to_vec(),
            ..EventEnvelope::default()
        }
    }

    #[test]
    fn actions_are_dotted_snake_case_of_the_event_name() {
        assert_eq!(action_of("promptops.prompts.v1.PromptCreated"), "prompt.created");
        assert_eq!(
            action_of("promptops.prompts.v1.PromptVersionCreated"),
            "prompt.version.created"
        );
        assert_eq!(action_of("Plain"), "plain");
    }

    #[test]
    fn consequences_of_another_mutation_are_folded() {
        assert_eq!(
            classify(&envelope(
                "promptops.identity.v1.EmailClaimed",
                identity::EmailClaimed::default()
            )),
            None
        );
        let founder = identity::MemberJoined {
            user_id: "u1".into(),
            role: identity::Role::Owner as i32,
            invitation_id: String::new(),
        };
        assert_eq!(
            classify(&envelope("promptops.identity.v1.MemberJoined", founder)),
            None
        );
        let invited = identity::MemberJoined {
            user_id: "u2".into(),
            role: identity::Role::Editor as i32,
            invitation_id: "inv".into(),
        };
        let entry = classify(&envelope("promptops.identity.v1.MemberJoined", invited)).unwrap();
        assert_eq!(entry.action, "member.joined");
        assert_eq!(entry.summary, "u2 joined as editor (invitation inv)");
    }

    #[test]
    fn failures_and_cancellations_have_their_outcome() {
        let failed = classify(&envelope(
            "promptops.execution.v1.ExecutionFailed",
            execution::ExecutionFailed {
                error_class: "unavailable".into(),
                ..Default::default()
            },
        ))
        .unwrap();
        assert_eq!(
            (failed.action.as_str(), failed.outcome),
            ("execution.failed", FAILURE)
        );
        let finished = classify(&envelope(
            "promptops.evaluation.v1.EvaluationRunFinished",
            evaluation::EvaluationRunFinished {
                status: evaluation::EvaluationRunStatus::Cancelled as i32,
                ..Default::default()
            },
        ))
        .unwrap();
        assert_eq!(
            (finished.action.as_str(), finished.outcome),
            ("evaluation.run.cancelled", CANCELLED)
        );
    }

    #[test]
    fn provider_summaries_show_the_hint_never_the_sealed_credential() {
        let set = execution::ProviderSet {
            name: "openai".into(),
            base_url: "https://api.openai.com/v1".into(),
            sealed_credential: b"SEALED-BYTES".to_vec(),
            credential_hint: "sk-…1234".into(),
            ..Default::default()
        };
        let entry = classify(&envelope("promptops.execution.v1.ProviderSet", set)).unwrap();
        assert!(entry.summary.contains("sk-…1234"));
        assert!(!entry.summary.contains("SEALED"));
    }

    #[test]
    fn sessions_carry_where_the_request_came_from() {
        let started = identity::SessionStarted {
            session_id: "s".into(),
            user_id: "u".into(),
            client_address: "203.0.113.7".into(),
            user_agent: "curl/8".into(),
        };
        let entry = classify(&envelope("promptops.identity.v1.SessionStarted", started)).unwrap();
        assert_eq!(entry.client_address, "203.0.113.7");
        assert_eq!(entry.user_agent, "curl/8");
    }
}
