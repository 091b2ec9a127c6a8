//! One human-readable line per event for the audit trail. Never includes a
//! secret: each known event type says what it may show; unknown types show
//! only their name.

use promptops_eventlog::EventEnvelope;
use promptops_proto::prompts::v1::{
    LabelMoved, LabelPolicySet, LabelRemoved, PromptArchived, PromptCreated, PromptRestored, VersionCreated,
};
use prost::Message as _;

pub fn summarize(envelope: &EventEnvelope) -> String {
    match envelope.event_type.as_str() {
        "promptops.prompts.v1.PromptCreated" => match PromptCreated::decode(envelope.payload.as_slice()) {
            Ok(created) => {
                let folder = if created.folder.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", created.folder)
                };
                format!("created prompt {:?}{folder}", created.name)
            }
            Err(_) => "created a prompt (payload unreadable)".to_owned(),
        },
        "promptops.prompts.v1.VersionCreated" => decoded(envelope, |e: VersionCreated| {
            let v = e.version.unwrap_or_default();
            let copied = if v.copied_from == 0 {
                String::new()
            } else {
                format!(" (copy of version {})", v.copied_from)
            };
            format!("saved version {}{copied}: {:?}", v.number, v.commit_message)
        }),
        "promptops.prompts.v1.LabelMoved" => decoded(envelope, |e: LabelMoved| {
            format!(
                "moved label {:?} from version {} to {}{}",
                e.label,
                e.previous_version,
                e.version,
                reason(&e.reason)
            )
        }),
        "promptops.prompts.v1.LabelRemoved" => decoded(envelope, |e: LabelRemoved| {
            format!(
                "removed label {:?} (was version {}){}",
                e.label,
                e.previous_version,
                reason(&e.reason)
            )
        }),
        "promptops.prompts.v1.PromptArchived" => decoded(envelope, |e: PromptArchived| {
            format!("archived the prompt{}", reason(&e.reason))
        }),
        "promptops.prompts.v1.PromptRestored" => decoded(envelope, |e: PromptRestored| {
            format!("restored the prompt{}", reason(&e.reason))
        }),
        "promptops.prompts.v1.LabelPolicySet" => decoded(envelope, |e: LabelPolicySet| {
            format!("protected labels set to {:?}", e.protected_labels)
        }),
        other => other.rsplit('.').next().unwrap_or(other).to_owned(),
    }
}

fn reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason:?}")
    }
}

fn decoded<M: prost::Message + Default>(envelope: &EventEnvelope, show: impl Fn(M) -> String) -> String {
    match M::decode(envelope.payload.as_slice()) {
        Ok(message) => show(message),
        Err(_) => format!("{} (payload unreadable)", envelope.event_type),
    }
}
