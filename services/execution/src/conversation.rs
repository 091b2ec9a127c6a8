//! The `conversation` aggregate (`evt.execution.<org>.conversation.<id>`):
//! a thread of turns, each a user message answered by one run with the
//! thread so far as context. Pure: decided and folded without I/O.
//!
//! One turn is answered at a time: a message sent while the previous turn
//! is still being answered is refused (409), unless that turn has been in
//! flight longer than a run can take (its replica died) — then it is ended
//! as failed (`abandoned`) and the new turn starts.

use promptops_eventlog::{EventDraft, EventEnvelope};
use promptops_proto::execution::v1::{ConversationStarted, RunStatus, Turn, TurnEnded, TurnStarted};
use promptops_proto::prompts::v1::{ChatMessage, ChatRole};
use prost::Message as _;

pub const AGGREGATE_TYPE: &str = "conversation";
pub const STARTED: &str = "promptops.execution.v1.ConversationStarted";
pub const TURN_STARTED: &str = "promptops.execution.v1.TurnStarted";
pub const TURN_ENDED: &str = "promptops.execution.v1.TurnEnded";

/// Title, at most, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// System message and each user message, at most, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Turns in one conversation, at most.
pub const MAX_TURNS: usize = 1_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationState {
    pub started: Option<ConversationStarted>,
    /// The model of the next turn.
    pub model: String,
    pub turns: Vec<TurnState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TurnState {
    pub started: TurnStarted,
    pub ended: Option<TurnEnded>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationEvent {
    Started(ConversationStarted),
    TurnStarted(TurnStarted),
    TurnEnded(TurnEnded),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConversationCommand {
    Start(ConversationStarted),
    /// A user message, to be answered by `run_id` on `model`.
    BeginTurn {
        content: String,
        model: String,
        run_id: String,
        now_ms: i64,
        /// A turn in flight longer than this is abandoned.
        stale_after_ms: i64,
    },
    /// The answer to a turn (ignored when the turn has already ended).
    EndTurn(TurnEnded),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversationError {
    #[error("no such conversation")]
    NotFound,
    #[error("the conversation exists already")]
    Exists,
    #[error("turn {0} is still being answered; send the next message when it is done")]
    Busy(u32),
    #[error("the conversation has {MAX_TURNS} turns, the most it may have; start a new one")]
    Full,
}

impl ConversationState {
    /// The turn being answered, if any.
    pub fn in_flight(&self) -> Option<&TurnState> {
        self.turns.last().filter(|t| t.ended.is_none())
    }

    /// The number of the turn being answered, unless it has been in flight
    /// for `stale_after_ms` or more (then it counts as abandoned).
    pub fn busy_turn(&self, now_ms: i64, stale_after_ms: i64) -> Option<u32> {
        self.in_flight()
            .filter(|t| now_ms - t.started.started_at_ms < stale_after_ms)
            .map(|t| t.started.number)
    }

    /// The context of the next turn: the system message, then each
    /// completed turn's message and answer, then `content`.
    pub fn context_for(&self, content: &str) -> Vec<ChatMessage> {
        let system = self
            .started
            .as_ref()
            .map(|s| s.system.as_str())
            .filter(|s| !s.is_empty())
            .map(|s| ChatMessage {
                role: ChatRole::System as i32,
                content: s.to_owned(),
            });
        let turns = self.turns.iter().filter_map(|t| match &t.ended {
            Some(ended) if ended.status == RunStatus::Completed as i32 => Some([
                ChatMessage {
                    role: ChatRole::User as i32,
                    content: t.started.content.clone(),
                },
                ChatMessage {
                    role: ChatRole::Assistant as i32,
                    content: ended.reply.clone(),
                },
            ]),
            _ => None,
        });
        system
            .into_iter()
            .chain(turns.flatten())
            .chain(std::iter::once(ChatMessage {
                role: ChatRole::User as i32,
                content: content.to_owned(),
            }))
            .collect()
    }

    /// Its turns as the API shows them.
    pub fn turn_messages(&self) -> Vec<Turn> {
        self.turns
            .iter()
            .map(|t| {
                let ended = t.ended.as_ref();
                Turn {
                    number: t.started.number,
                    content: t.started.content.clone(),
                    reply: ended.map(|e| e.reply.clone()).unwrap_or_default(),
                    model: ended.map_or_else(|| t.started.model.clone(), |e| e.model.clone()),
                    run_id: t.started.run_id.clone(),
                    status: ended.map_or(RunStatus::Running as i32, |e| e.status),
                    started_at: Some(promptops_platform::paging::timestamp_from_ms(
                        t.started.started_at_ms,
                    )),
                }
            })
            .collect()
    }
}

pub fn decide(
    state: &ConversationState,
    command: ConversationCommand,
) -> Result<Vec<ConversationEvent>, ConversationError> {
    match command {
        ConversationCommand::Start(started) => {
            if state.started.is_some() {
                return Err(ConversationError::Exists);
            }
            Ok(vec![ConversationEvent::Started(started)])
        }
        ConversationCommand::BeginTurn {
            content,
            model,
            run_id,
            now_ms,
            stale_after_ms,
        } => {
            if state.started.is_none() {
                return Err(ConversationError::NotFound);
            }
            if state.turns.len() >= MAX_TURNS {
                return Err(ConversationError::Full);
            }
            if let Some(number) = state.busy_turn(now_ms, stale_after_ms) {
                return Err(ConversationError::Busy(number));
            }
            let mut events = Vec::new();
            if let Some(turn) = state.in_flight() {
                events.push(ConversationEvent::TurnEnded(TurnEnded {
                    number: turn.started.number,
                    run_id: turn.started.run_id.clone(),
                    status: RunStatus::Failed as i32,
                    reply: String::new(),
                    model: turn.started.model.clone(),
                    error: "abandoned: no answer was recorded in time".into(),
                }));
            }
            events.push(ConversationEvent::TurnStarted(TurnStarted {
                number: u32::try_from(state.turns.len() + 1).unwrap_or(u32::MAX),
                content,
                model,
                run_id,
                started_at_ms: now_ms,
            }));
            Ok(events)
        }
        ConversationCommand::EndTurn(ended) => {
            let open = state.turns.iter().any(|t| {
                t.started.number == ended.number && t.started.run_id == ended.run_id && t.ended.is_none()
            });
            Ok(if open {
                vec![ConversationEvent::TurnEnded(ended)]
            } else {
                Vec::new()
            })
        }
    }
}

pub fn evolve(mut state: ConversationState, event: &ConversationEvent) -> ConversationState {
    match event {
        ConversationEvent::Started(e) => {
            state.model.clone_from(&e.model);
            state.started = Some(e.clone());
        }
        ConversationEvent::TurnStarted(e) => {
            state.model.clone_from(&e.model);
            state.turns.push(TurnState {
                started: e.clone(),
                ended: None,
            });
        }
        ConversationEvent::TurnEnded(e) => {
            if let Some(turn) = state.turns.iter_mut().find(|t| t.started.number == e.number) {
                turn.ended = Some(e.clone());
            }
        }
    }
    state
}

#[derive(Debug)]
pub struct Conversation;

impl promptops_eventlog::aggregate::Aggregate for Conversation {
    type State = ConversationState;
    type Event = ConversationEvent;
    type Command = ConversationCommand;
    type Error = ConversationError;
    const TYPE: &'static str = AGGREGATE_TYPE;

    fn decide(
        state: &ConversationState,
        command: ConversationCommand,
    ) -> Result<Vec<ConversationEvent>, ConversationError> {
        decide(state, command)
    }
    fn evolve(state: ConversationState, event: &ConversationEvent) -> ConversationState {
        evolve(state, event)
    }
    fn encode(event: &ConversationEvent) -> EventDraft {
        match event {
            ConversationEvent::Started(e) => EventDraft::new(STARTED, e.encode_to_vec()),
            ConversationEvent::TurnStarted(e) => EventDraft::new(TURN_STARTED, e.encode_to_vec()),
            ConversationEvent::TurnEnded(e) => EventDraft::new(TURN_ENDED, e.encode_to_vec()),
        }
    }
    fn decode(envelope: &EventEnvelope) -> Option<ConversationEvent> {
        let payload = envelope.payload.as_slice();
        match envelope.event_type.as_str() {
            STARTED => ConversationStarted::decode(payload)
                .ok()
                .map(ConversationEvent::Started),
            TURN_STARTED => TurnStarted::decode(payload)
                .ok()
                .map(ConversationEvent::TurnStarted),
            TURN_ENDED => TurnEnded::decode(payload).ok().map(ConversationEvent::TurnEnded),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(events: &[ConversationEvent]) -> ConversationState {
        events.iter().fold(ConversationState::default(), evolve)
    }

    fn started() -> ConversationEvent {
        ConversationEvent::Started(ConversationStarted {
            title: "t".into(),
            model: "mock/echo".into(),
            system: "Be brief.".into(),
            ..Default::default()
        })
    }

    fn begin(content: &str, model: &str, run_id: &str, now_ms: i64) -> ConversationCommand {
        ConversationCommand::BeginTurn {
            content: content.into(),
            model: model.into(),
            run_id: run_id.into(),
            now_ms,
            stale_after_ms: 1_000,
        }
    }

    fn ended(number: u32, run_id: &str, status: RunStatus, reply: &str, model: &str) -> ConversationEvent {
        ConversationEvent::TurnEnded(TurnEnded {
            number,
            run_id: run_id.into(),
            status: status as i32,
            reply: reply.into(),
            model: model.into(),
            error: String::new(),
        })
    }

    /// Runs `command` on `state` and folds what it decided.
    fn apply(state: ConversationState, command: ConversationCommand) -> ConversationState {
        decide(&state, command).unwrap().iter().fold(state, evolve)
    }

    #[test]
    fn the_context_is_the_system_message_then_completed_turns_then_the_new_message() {
        let mut state = given(&[started()]);
        state = apply(state, begin("one", "mock/echo", "r1", 0));
        state = evolve(
            state,
            &ended(1, "r1", RunStatus::Completed, "first answer", "mock/echo"),
        );
        state = apply(state, begin("two", "mock/lorem", "r2", 10));
        state = evolve(state, &ended(2, "r2", RunStatus::Failed, "", "mock/lorem"));
        state = apply(state, begin("three", "mock/lorem", "r3", 20));
        assert_eq!(
            state.model, "mock/lorem",
            "a turn's model becomes the conversation's"
        );
        let context: Vec<(i32, String)> = state
            .context_for("four")
            .into_iter()
            .map(|m| (m.role, m.content))
            .collect();
        assert_eq!(
            context,
            [
                (ChatRole::System as i32, "Be brief.".to_owned()),
                (ChatRole::User as i32, "one".to_owned()),
                (ChatRole::Assistant as i32, "first answer".to_owned()),
                (ChatRole::User as i32, "four".to_owned()),
            ],
            "the failed turn and the one in flight are not context"
        );
    }

    #[test]
    fn one_turn_at_a_time_unless_the_one_in_flight_was_abandoned() {
        let state = apply(given(&[started()]), begin("one", "mock/echo", "r1", 0));
        assert_eq!(
            decide(&state, begin("two", "mock/echo", "r2", 999)),
            Err(ConversationError::Busy(1))
        );
        // Past the stale time: the old turn ends as failed, the new one starts.
        let events = decide(&state, begin("two", "mock/echo", "r2", 1_000)).unwrap();
        assert!(
            matches!(&events[0], ConversationEvent::TurnEnded(e) if e.number == 1 && e.status == RunStatus::Failed as i32)
        );
        assert!(matches!(&events[1], ConversationEvent::TurnStarted(e) if e.number == 2 && e.run_id == "r2"));
        let state = events.iter().fold(state, evolve);
        // The late answer of the abandoned turn changes nothing.
        let late = TurnEnded {
            number: 1,
            run_id: "r1".into(),
            status: RunStatus::Completed as i32,
            reply: "late".into(),
            ..Default::default()
        };
        assert_eq!(decide(&state, ConversationCommand::EndTurn(late)), Ok(vec![]));
        // Nor does an answer from another run, or a second answer.
        let wrong_run = TurnEnded {
            number: 2,
            run_id: "other".into(),
            ..Default::default()
        };
        assert_eq!(
            decide(&state, ConversationCommand::EndTurn(wrong_run)),
            Ok(vec![])
        );
        let answer = TurnEnded {
            number: 2,
            run_id: "r2".into(),
            status: RunStatus::Completed as i32,
            ..Default::default()
        };
        let state = apply(state, ConversationCommand::EndTurn(answer.clone()));
        assert_eq!(decide(&state, ConversationCommand::EndTurn(answer)), Ok(vec![]));
        assert!(state.in_flight().is_none());
    }

    #[test]
    fn turns_need_a_started_conversation_and_a_conversation_starts_once() {
        assert_eq!(
            decide(&ConversationState::default(), begin("x", "mock/echo", "r", 0)),
            Err(ConversationError::NotFound)
        );
        let ConversationEvent::Started(s) = started() else {
            unreachable!()
        };
        assert_eq!(
            decide(&given(&[started()]), ConversationCommand::Start(s)),
            Err(ConversationError::Exists)
        );
    }

    #[test]
    fn turns_show_the_model_that_answered_and_running_turns_as_running() {
        let mut state = apply(given(&[started()]), begin("one", "mock/echo", "r1", 5));
        state = evolve(state, &ended(1, "r1", RunStatus::Completed, "a", "mock/lorem"));
        state = apply(state, begin("two", "mock/echo", "r2", 6));
        let turns = state.turn_messages();
        assert_eq!(
            (turns[0].model.as_str(), turns[0].status),
            ("mock/lorem", RunStatus::Completed as i32)
        );
        assert_eq!((turns[1].number, turns[1].status), (2, RunStatus::Running as i32));
    }
}
