//! How identity events are stored: each aggregate's events as protobuf
//! payloads named `promptops.identity.v1.<Message>`, and the [`Aggregate`]
//! bindings that let `promptops_eventlog::aggregate::execute` run commands.

use promptops_eventlog::aggregate::Aggregate;
use promptops_eventlog::{EventDraft, EventEnvelope};
use promptops_proto::identity::v1 as pb;
use prost::Message as _;

use super::{api_key, org, session, user};

macro_rules! codec {
    ($event:ident { $($variant:ident => $message:ident),* $(,)? }) => {
        fn encode(event: &Self::Event) -> EventDraft {
            match event {
                $($event::$variant(m) => EventDraft::new(
                    concat!("promptops.identity.v1.", stringify!($message)),
                    m.encode_to_vec(),
                ),)*
            }
        }

        fn decode(envelope: &EventEnvelope) -> Option<Self::Event> {
            let payload = envelope.payload.as_slice();
            match envelope.event_type.as_str() {
                $(concat!("promptops.identity.v1.", stringify!($message)) =>
                    pb::$message::decode(payload).ok().map($event::$variant),)*
                _ => None,
            }
        }
    };
}

#[derive(Debug)]
pub struct User;

impl Aggregate for User {
    type State = user::UserState;
    type Event = user::UserEvent;
    type Command = user::UserCommand;
    type Error = user::UserError;
    const TYPE: &'static str = "user";

    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error> {
        user::decide(state, command)
    }
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
        user::evolve(state, event)
    }
    codec!(UserEvent { Registered => UserRegistered, PasswordChanged => UserPasswordChanged, LoginFailed => UserLoginFailed });
}

use user::UserEvent;

/// One email address's claim: appended with "no events yet" expected, so
/// the log itself keeps addresses unique.
#[derive(Debug)]
pub struct EmailClaim;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmailClaimState {
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EmailClaimEvent {
    Claimed(pb::EmailClaimed),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailTaken;

impl Aggregate for EmailClaim {
    type State = EmailClaimState;
    type Event = EmailClaimEvent;
    type Command = String;
    type Error = EmailTaken;
    const TYPE: &'static str = "email";

    fn decide(state: &Self::State, user_id: String) -> Result<Vec<Self::Event>, Self::Error> {
        match state.user_id {
            Some(_) => Err(EmailTaken),
            None => Ok(vec![EmailClaimEvent::Claimed(pb::EmailClaimed { user_id })]),
        }
    }
    fn evolve(mut state: Self::State, event: &Self::Event) -> Self::State {
        let EmailClaimEvent::Claimed(claimed) = event;
        state.user_id = Some(claimed.user_id.clone());
        state
    }
    codec!(EmailClaimEvent { Claimed => EmailClaimed });
}

#[derive(Debug)]
pub struct Org;

use org::OrgEvent;

impl Aggregate for Org {
    type State = org::OrgState;
    type Event = org::OrgEvent;
    type Command = org::OrgCommand;
    type Error = org::OrgError;
    const TYPE: &'static str = "org";

    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error> {
        org::decide(state, command)
    }
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
        org::evolve(state, event)
    }
    codec!(OrgEvent {
        Created => OrgCreated,
        Invited => MemberInvited,
        Joined => MemberJoined,
        RoleChanged => MemberRoleChanged,
        Removed => MemberRemoved,
        GrantAdded => GrantAdded,
        GrantRemoved => GrantRemoved,
        RetentionSet => RetentionPolicySet,
    });
}

#[derive(Debug)]
pub struct Session;

use session::SessionEvent;

impl Aggregate for Session {
    type State = session::SessionState;
    type Event = session::SessionEvent;
    type Command = session::SessionCommand;
    type Error = session::SessionError;
    const TYPE: &'static str = "session";

    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error> {
        session::decide(state, command)
    }
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
        session::evolve(state, event)
    }
    codec!(SessionEvent {
        Started => SessionStarted,
        Refreshed => SessionRefreshed,
        ReuseDetected => RefreshReuseDetected,
        Revoked => SessionRevoked,
    });
}

#[derive(Debug)]
pub struct ApiKey;

use api_key::ApiKeyEvent;

impl Aggregate for ApiKey {
    type State = api_key::ApiKeyState;
    type Event = api_key::ApiKeyEvent;
    type Command = api_key::ApiKeyCommand;
    type Error = api_key::ApiKeyError;
    const TYPE: &'static str = "api_key";

    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error> {
        api_key::decide(state, command)
    }
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State {
        api_key::evolve(state, event)
    }
    codec!(ApiKeyEvent { Created => ApiKeyCreated, Rotated => ApiKeyRotated, Revoked => ApiKeyRevoked });
}

#[cfg(test)]
mod tests {
    use super::*;
    use promptops_eventlog::{AggregateRef, Context, EventMetadata, envelope_for};

    #[test]
    fn every_event_survives_encode_and_decode() {
        let agg = AggregateRef::new(Context::Identity, "acme", "org", "acme").unwrap();
        let events = vec![
            OrgEvent::Created(pb::OrgCreated {
                org_id: "acme".into(),
                name: "Acme".into(),
                owner_user_id: "u1".into(),
            }),
            OrgEvent::Joined(pb::MemberJoined {
                user_id: "u1".into(),
                role: pb::Role::Owner as i32,
                invitation_id: String::new(),
            }),
        ];
        for event in events {
            let envelope = envelope_for(&agg, 1, Org::encode(&event), &EventMetadata::default());
            assert!(envelope.event_type.starts_with("promptops.identity.v1."));
            assert_eq!(Org::decode(&envelope), Some(event));
        }
        let session = SessionEvent::Revoked(pb::SessionRevoked {
            session_id: "s".into(),
            reason: "logout".into(),
        });
        let envelope = envelope_for(&agg, 1, Session::encode(&session), &EventMetadata::default());
        assert_eq!(envelope.event_type, "promptops.identity.v1.SessionRevoked");
        assert_eq!(Session::decode(&envelope), Some(session));
        assert_eq!(
            Org::decode(&envelope),
            None,
            "another aggregate's event is not an org event"
        );
    }
}
