//! One human-readable line per event for the audit trail. Never includes a
//! secret: each known event type says what it may show; unknown types show
//! only their name.

use promptops_eventlog::EventEnvelope;
use promptops_proto::prompts::v1::PromptCreated;
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
        other => other.rsplit('.').next().unwrap_or(other).to_owned(),
    }
}
