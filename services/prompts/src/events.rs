//! The stored form of prompt events: protobuf payloads named by their fully
//! qualified type, decoded back (upcasting happens in `evolve`, e.g. a
//! `PromptCreated` from before versions had their own message).

use promptops_eventlog::{EventDraft, EventEnvelope};
use promptops_platform::errors::FieldViolation;
use promptops_proto::prompts::v1::{
    LabelMoved, LabelPolicySet, LabelRemoved, PromptArchived, PromptCreated, PromptDetailsChanged,
    PromptRestored, VersionCreated,
};
use prost::Message;

use crate::domain::{self, PromptCommand, PromptError, PromptEvent, PromptState};

pub const PROMPT_CREATED: &str = "promptops.prompts.v1.PromptCreated";
pub const VERSION_CREATED: &str = "promptops.prompts.v1.VersionCreated";
pub const LABEL_MOVED: &str = "promptops.prompts.v1.LabelMoved";
pub const LABEL_REMOVED: &str = "promptops.prompts.v1.LabelRemoved";
pub const DETAILS_CHANGED: &str = "promptops.prompts.v1.PromptDetailsChanged";
pub const PROMPT_ARCHIVED: &str = "promptops.prompts.v1.PromptArchived";
pub const PROMPT_RESTORED: &str = "promptops.prompts.v1.PromptRestored";
pub const LABEL_POLICY_SET: &str = "promptops.prompts.v1.LabelPolicySet";

/// The aggregate type in subjects and envelopes.
pub const AGGREGATE_TYPE: &str = "prompt";
/// The org's label policy: one aggregate per org, id [`POLICY_ID`].
pub const POLICY_AGGREGATE_TYPE: &str = "label_policy";
pub const POLICY_ID: &str = "org";

pub fn to_draft(event: &PromptEvent) -> EventDraft {
    let (event_type, payload) = match event {
        PromptEvent::Created(e) => (PROMPT_CREATED, e.encode_to_vec()),
        PromptEvent::VersionCreated(e) => (VERSION_CREATED, e.encode_to_vec()),
        PromptEvent::LabelMoved(e) => (LABEL_MOVED, e.encode_to_vec()),
        PromptEvent::LabelRemoved(e) => (LABEL_REMOVED, e.encode_to_vec()),
        PromptEvent::DetailsChanged(e) => (DETAILS_CHANGED, e.encode_to_vec()),
        PromptEvent::Archived(e) => (PROMPT_ARCHIVED, e.encode_to_vec()),
        PromptEvent::Restored(e) => (PROMPT_RESTORED, e.encode_to_vec()),
    };
    EventDraft::new(event_type, payload)
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

fn decode<M: Message + Default>(
    envelope: &EventEnvelope,
    wrap: fn(M) -> PromptEvent,
) -> Result<PromptEvent, DecodeError> {
    M::decode(envelope.payload.as_slice())
        .map(wrap)
        .map_err(|source| DecodeError::Payload {
            event_type: envelope.event_type.clone(),
            source,
        })
}

pub fn from_envelope(envelope: &EventEnvelope) -> Result<PromptEvent, DecodeError> {
    match envelope.event_type.as_str() {
        PROMPT_CREATED => decode::<PromptCreated>(envelope, PromptEvent::Created),
        VERSION_CREATED => decode::<VersionCreated>(envelope, PromptEvent::VersionCreated),
        LABEL_MOVED => decode::<LabelMoved>(envelope, PromptEvent::LabelMoved),
        LABEL_REMOVED => decode::<LabelRemoved>(envelope, PromptEvent::LabelRemoved),
        DETAILS_CHANGED => decode::<PromptDetailsChanged>(envelope, PromptEvent::DetailsChanged),
        PROMPT_ARCHIVED => decode::<PromptArchived>(envelope, PromptEvent::Archived),
        PROMPT_RESTORED => decode::<PromptRestored>(envelope, PromptEvent::Restored),
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

/// The labels an org protects when it has set none: `production`.
pub const DEFAULT_PROTECTED_LABELS: &[&str] = &["production"];

/// The org's label policy, an aggregate of its own.
#[derive(Debug)]
pub struct LabelPolicy;

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyState {
    pub protected_labels: Vec<String>,
}

impl Default for PolicyState {
    fn default() -> Self {
        Self {
            protected_labels: DEFAULT_PROTECTED_LABELS.iter().map(|&l| l.to_owned()).collect(),
        }
    }
}

impl promptops_eventlog::aggregate::Aggregate for LabelPolicy {
    type State = PolicyState;
    type Event = LabelPolicySet;
    type Command = LabelPolicySet;
    type Error = Vec<FieldViolation>;
    const TYPE: &'static str = POLICY_AGGREGATE_TYPE;

    fn decide(
        state: &PolicyState,
        command: LabelPolicySet,
    ) -> Result<Vec<LabelPolicySet>, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        for (i, label) in command.protected_labels.iter().enumerate() {
            violations.extend(domain::validate_label(label, &format!("protected_labels[{i}]")));
        }
        if command.protected_labels.len() > 100 {
            violations.push(FieldViolation::new("protected_labels", "at most 100 labels"));
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        let mut labels = command.protected_labels;
        labels.sort();
        labels.dedup();
        if labels == state.protected_labels {
            return Ok(Vec::new());
        }
        Ok(vec![LabelPolicySet {
            protected_labels: labels,
        }])
    }
    fn evolve(_state: PolicyState, event: &LabelPolicySet) -> PolicyState {
        PolicyState {
            protected_labels: event.protected_labels.clone(),
        }
    }
    fn encode(event: &LabelPolicySet) -> EventDraft {
        EventDraft::new(LABEL_POLICY_SET, event.encode_to_vec())
    }
    fn decode(envelope: &EventEnvelope) -> Option<LabelPolicySet> {
        (envelope.event_type == LABEL_POLICY_SET)
            .then(|| LabelPolicySet::decode(envelope.payload.as_slice()).ok())
            .flatten()
    }
}
