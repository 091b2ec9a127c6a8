//! Read-your-write: a query given a log position (as returned by a command)
//! waits, bounded, until the read model's projection has applied it.

use std::time::Duration;

use promptops_eventlog::Context;
use promptops_eventlog::projection::wait_for_position;
use promptops_proto::common::v1::LogPosition;
use sqlx::AnyPool;

use crate::errors::{ErrorClass, FieldViolation, ServiceError};

/// How long a read waits for a projection to reach a requested position.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The position of `sequence` in `context`'s stream, as commands return it.
pub fn position(context: Context, sequence: u64) -> LogPosition {
    LogPosition {
        stream: context.stream_name().to_owned(),
        sequence,
    }
}

/// Waits until `projection` in `db` has applied `position` (if given):
/// INVALID_ARGUMENT for an unknown stream, DEADLINE_EXCEEDED after [`TIMEOUT`].
pub async fn wait_for(
    db: &AnyPool,
    projection: &str,
    position: Option<&LogPosition>,
) -> Result<(), ServiceError> {
    let Some(position) = position else { return Ok(()) };
    let context = Context::from_stream_name(&position.stream).ok_or_else(|| {
        ServiceError::invalid(vec![FieldViolation::new("min_position.stream", "unknown stream")])
    })?;
    let reached = wait_for_position(db, projection, context, position.sequence, TIMEOUT)
        .await
        .map_err(|e| ServiceError::unavailable("the read model", e))?;
    if reached {
        Ok(())
    } else {
        Err(ServiceError::new(
            ErrorClass::DeadlineExceeded,
            "the read model has not caught up with the requested position yet",
        ))
    }
}
