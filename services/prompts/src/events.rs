//! The stored form of prompt events: protobuf payloads named by their fully
//! qualified type, decoded back (upcasting would happen here, before decode).

use promptops_eventlog::{EventDraft, EventEnvelope};
use promptops_proto::prompts::v1::PromptCreated;
use prost::Message as _;

use crate::domain::{self, PromptCommand, PromptError, PromptEvent, PromptState};

pub const PROMPT_CREATED: &str = "promptops.prompts.v1.PromptCreated";

/// The aggregate type in subjects and envelopes.
pub const AGGREGATE_TYPE: &str = "prompt";

pub fn to_draft(event: &PromptEvent) -> EventDraft {
    match event {
        PromptEvent::Created(created) => EventDraft::new(PROMPT_CREATED, created.encode_to_vec()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown prompt event type {0:?}")]
    UnknownType(String),
    #[error("cannot decode {event_type}: {source}")]
    Payload {
        event_type: String,
        #[source]
        source: prost::DecodeError,
    },
}

pub fn from_envelope(envelope: &EventEnvelope) -> Result<PromptEvent, DecodeError> {
    let payload = envelope.payload.as_slice();
    match envelope.event_type.as_str() {
        PROMPT_CREATED => PromptCreated::decode(payload)
            .map(PromptEvent::Created)
            .map_err(|source| DecodeError::Payload {
                event_type: envelope.event_type.clone(),
                source,
            }),
        other => Err(DecodeError::UnknownType(other.to_owned())),
    }
}

/// The prompt aggregate, for `promptops_eventlog::aggregate::execute`.
#[derive(Debug)]
pub struct Prompt;

impl promptops_eventlog::aggregate::Aggregate for Prompt {
    type State = PromptState;
    type Event = PromptEvent;
    type Command = PromptCommand;
    type Error = PromptError;
    const TYPE: &'static str = AGGREGATE_TYPE;

    fn decide(state: &PromptState, command: PromptCommand) -> Result<Vec<PromptEvent>, PromptError> {
        domain::decide(state, command)
    }
    fn evolve(state: PromptState, event: &PromptEvent) -> PromptState {
        domain::evolve(state, event)
    }
    fn encode(event: &PromptEvent) -> EventDraft {
        to_draft(event)
    }
    fn decode(envelope: &EventEnvelope) -> Option<PromptEvent> {
        from_envelope(envelope).ok()
    }
}
