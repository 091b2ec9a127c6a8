//! Errors of the event log: domain-visible outcomes (a conflict) apart from
//! infrastructure failures (the store is unreachable or corrupt).

use crate::Expected;

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone else appended to the aggregate first. A normal outcome: the
    /// command handler reloads and decides again, or answers ABORTED.
    #[error("concurrent modification: expected {expected}, the aggregate is at sequence {actual}")]
    Conflict { expected: Expected, actual: u64 },
    /// The events do not belong to the aggregate they are appended to.
    #[error("invalid append: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The log could not be reached or returned something unreadable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("event at {stream} sequence {sequence} cannot be decoded: {reason}")]
    Corrupt {
        stream: String,
        sequence: u64,
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn unavailable(err: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(err.to_string())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Unavailable(format!("sqlite: {err}"))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Unavailable(format!("sqlite: {err}"))
    }
}
