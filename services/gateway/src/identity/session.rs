//! The session aggregate: one refresh-token family.
//!
//! Each refresh token belongs to a session and a generation. Refreshing with
//! the current generation issues the next; presenting an older (spent)
//! generation means the family leaked: the session is revoked at once
//! (`RefreshReuseDetected` then `SessionRevoked`), and every access token of
//! the session is refused from then on through the revocation list.

use promptops_proto::identity::v1::{RefreshReuseDetected, SessionRefreshed, SessionRevoked, SessionStarted};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionState {
    pub started: Option<SessionStarted>,
    /// The generation of the refresh token that is valid now (0 at start).
    pub generation: u64,
    pub revoked: Option<String>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    Started(SessionStarted),
    Refreshed(SessionRefreshed),
    ReuseDetected(RefreshReuseDetected),
    Revoked(SessionRevoked),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    Start {
        session_id: String,
        user_id: String,
        client_address: String,
        user_agent: String,
    },
    /// Present the refresh token of `generation`.
    Refresh {
        generation: u64,
    },
    Revoke {
        reason: RevokeReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    Revoked,
    Forced,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::Revoked => "revoked",
            RevokeReason::Forced => "forced",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    #[error("the session already exists")]
    AlreadyExists,
    /// Unknown session, revoked session, or a token that was never issued:
    /// one answer for all.
    #[error("the refresh token is not valid")]
    InvalidToken,
}

pub fn decide(state: &SessionState, command: SessionCommand) -> Result<Vec<SessionEvent>, SessionError> {
    match command {
        SessionCommand::Start {
            session_id,
            user_id,
            client_address,
            user_agent,
        } => {
            if state.started.is_some() {
                return Err(SessionError::AlreadyExists);
            }
            Ok(vec![SessionEvent::Started(SessionStarted {
                session_id,
                user_id,
                client_address,
                user_agent: user_agent.chars().take(300).collect(),
            })])
        }
        SessionCommand::Refresh { generation } => {
            let started = state.started.as_ref().ok_or(SessionError::InvalidToken)?;
            if state.revoked.is_some() || generation > state.generation {
                return Err(SessionError::InvalidToken);
            }
            if generation < state.generation {
                // A spent token came back: the family leaked. The caller
                // appends these events and answers 401.
                return Ok(vec![
                    SessionEvent::ReuseDetected(RefreshReuseDetected {
                        session_id: started.session_id.clone(),
                        generation,
                    }),
                    SessionEvent::Revoked(SessionRevoked {
                        session_id: started.session_id.clone(),
                        reason: "refresh_reuse".into(),
                    }),
                ]);
            }
            Ok(vec![SessionEvent::Refreshed(SessionRefreshed {
                session_id: started.session_id.clone(),
                generation: state.generation + 1,
            })])
        }
        SessionCommand::Revoke { reason } => {
            let started = state.started.as_ref().ok_or(SessionError::InvalidToken)?;
            if state.revoked.is_some() {
                return Ok(Vec::new());
            }
            Ok(vec![SessionEvent::Revoked(SessionRevoked {
                session_id: started.session_id.clone(),
                reason: reason.as_str().into(),
            })])
        }
    }
}

/// Whether these events (from a refresh) mean the refresh was refused.
pub fn refresh_refused(events: &[SessionEvent]) -> bool {
    events.iter().any(|e| matches!(e, SessionEvent::ReuseDetected(_)))
}

pub fn evolve(mut state: SessionState, event: &SessionEvent) -> SessionState {
    match event {
        SessionEvent::Started(started) => state.started = Some(started.clone()),
        SessionEvent::Refreshed(refreshed) => state.generation = refreshed.generation,
        SessionEvent::ReuseDetected(_) => {}
        SessionEvent::Revoked(revoked) => state.revoked = Some(revoked.reason.clone()),
    }
    state.version += 1;
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> SessionState {
        let events = decide(
            &SessionState::default(),
            SessionCommand::Start {
                session_id: "s1".into(),
                user_id: "u1".into(),
                client_address: "127.0.0.1".into(),
                user_agent: "curl".into(),
            },
        )
        .unwrap();
        events.iter().fold(SessionState::default(), evolve)
    }

    fn apply(state: SessionState, command: SessionCommand) -> (SessionState, Vec<SessionEvent>) {
        let events = decide(&state, command).unwrap();
        (events.iter().fold(state, evolve), events)
    }

    #[test]
    fn each_refresh_spends_the_token_and_issues_the_next() {
        let (state, events) = apply(started(), SessionCommand::Refresh { generation: 0 });
        assert!(matches!(events.as_slice(), [SessionEvent::Refreshed(r)] if r.generation == 1));
        let (state, _) = apply(state, SessionCommand::Refresh { generation: 1 });
        assert_eq!(state.generation, 2);
        assert_eq!(
            decide(&state, SessionCommand::Refresh { generation: 7 }),
            Err(SessionError::InvalidToken)
        );
    }

    #[test]
    fn reusing_a_spent_token_revokes_the_family() {
        let (state, _) = apply(started(), SessionCommand::Refresh { generation: 0 });
        let (state, events) = apply(state, SessionCommand::Refresh { generation: 0 });
        assert!(refresh_refused(&events));
        assert!(
            matches!(events.as_slice(), [SessionEvent::ReuseDetected(_), SessionEvent::Revoked(r)] if r.reason == "refresh_reuse")
        );
        // The current token is dead too.
        assert_eq!(
            decide(&state, SessionCommand::Refresh { generation: 1 }),
            Err(SessionError::InvalidToken)
        );
    }

    #[test]
    fn logout_is_final_and_idempotent() {
        let (state, events) = apply(
            started(),
            SessionCommand::Revoke {
                reason: RevokeReason::Logout,
            },
        );
        assert!(matches!(events.as_slice(), [SessionEvent::Revoked(r)] if r.reason == "logout"));
        assert_eq!(
            decide(&state, SessionCommand::Refresh { generation: 0 }),
            Err(SessionError::InvalidToken)
        );
        assert_eq!(
            decide(
                &state,
                SessionCommand::Revoke {
                    reason: RevokeReason::Forced
                }
            ),
            Ok(Vec::new())
        );
        assert_eq!(
            decide(
                &SessionState::default(),
                SessionCommand::Refresh { generation: 0 }
            ),
            Err(SessionError::InvalidToken)
        );
    }
}
