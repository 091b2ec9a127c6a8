//! The user aggregate: who someone is across orgs.

use promptops_platform::errors::FieldViolation;
use promptops_proto::identity::v1::{UserLoginFailed, UserPasswordChanged, UserRegistered};

use super::validate_email;

pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserState {
    pub user: Option<UserRegistered>,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserEvent {
    Registered(UserRegistered),
    PasswordChanged(UserPasswordChanged),
    LoginFailed(UserLoginFailed),
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    Register {
        user_id: String,
        email: String,
        display_name: String,
    },
    ChangePassword,
    RecordLoginFailure {
        client_address: String,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UserError {
    #[error("invalid user")]
    Invalid(Vec<FieldViolation>),
    #[error("the user already exists")]
    AlreadyExists,
    #[error("no such user")]
    NotFound,
}

pub fn decide(state: &UserState, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
    match command {
        UserCommand::Register {
            user_id,
            email,
            display_name,
        } => {
            if state.user.is_some() {
                return Err(UserError::AlreadyExists);
            }
            let mut violations = Vec::new();
            if let Err(reason) = validate_email(&email) {
                violations.push(FieldViolation::new("email", reason));
            }
            if display_name.chars().count() > MAX_DISPLAY_NAME_CHARS {
                violations.push(FieldViolation::new(
                    "display_name",
                    format!("must be at most {MAX_DISPLAY_NAME_CHARS} characters"),
                ));
            }
            if display_name.chars().any(char::is_control) {
                violations.push(FieldViolation::new(
                    "display_name",
                    "must not contain control characters",
                ));
            }
            if !violations.is_empty() {
                return Err(UserError::Invalid(violations));
            }
            Ok(vec![UserEvent::Registered(UserRegistered {
                user_id,
                email: super::canonical_email(&email),
                display_name: display_name.trim().to_owned(),
            })])
        }
        UserCommand::RecordLoginFailure {
            client_address,
            reason,
        } => {
            let user = state.user.as_ref().ok_or(UserError::NotFound)?;
            Ok(vec![UserEvent::LoginFailed(UserLoginFailed {
                user_id: user.user_id.clone(),
                client_address,
                reason: reason.to_owned(),
            })])
        }
        UserCommand::ChangePassword => {
            let user = state.user.as_ref().ok_or(UserError::NotFound)?;
            Ok(vec![UserEvent::PasswordChanged(UserPasswordChanged {
                user_id: user.user_id.clone(),
            })])
        }
    }
}

pub fn evolve(mut state: UserState, event: &UserEvent) -> UserState {
    match event {
        UserEvent::Registered(registered) => state.user = Some(registered.clone()),
        UserEvent::PasswordChanged(_) | UserEvent::LoginFailed(_) => {}
    }
    state.version += 1;
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(email: &str) -> UserCommand {
        UserCommand::Register {
            user_id: "u1".into(),
            email: email.into(),
            display_name: " Ada Lovelace ".into(),
        }
    }

    fn given_when(given: &[UserEvent], when: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        decide(&given.iter().fold(UserState::default(), evolve), when)
    }

    #[test]
    fn registering_stores_the_canonical_email() {
        let events = given_when(&[], register("Ada@Example.com")).unwrap();
        let [UserEvent::Registered(user)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(user.display_name, "Ada Lovelace");
    }

    #[test]
    fn registering_twice_or_with_a_bad_email_is_refused() {
        let given = given_when(&[], register("ada@example.com")).unwrap();
        assert_eq!(
            given_when(&given, register("ada@example.com")),
            Err(UserError::AlreadyExists)
        );
        let Err(UserError::Invalid(violations)) = given_when(&[], register("not-an-email")) else {
            panic!("expected Invalid")
        };
        assert_eq!(violations[0].field, "email");
    }

    #[test]
    fn only_existing_users_change_passwords() {
        assert_eq!(
            given_when(&[], UserCommand::ChangePassword),
            Err(UserError::NotFound)
        );
        let given = given_when(&[], register("ada@example.com")).unwrap();
        assert!(matches!(
            given_when(&given, UserCommand::ChangePassword)
                .unwrap()
                .as_slice(),
            [UserEvent::PasswordChanged(_)]
        ));
    }
}
