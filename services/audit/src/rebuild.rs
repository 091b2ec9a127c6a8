//! Rebuilding a projection by replay: drop its rows, checkpoints and
//! consumers, then fold every stream from the start up to where it stood
//! when the rebuild began. Run with the audit service stopped (one runner
//! per projection and stream at a time); `promptops projections rebuild`
//! calls it.

use std::sync::Arc;
use std::time::Duration;

use promptops_eventlog::projection::{self, Projection, ProjectionRunner};
use promptops_eventlog::{Context, EventLog};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::signing::Signer;

/// The projections the audit service owns.
pub const NAMES: [&str; 2] = [crate::trail::PROJECTION, crate::analytics::PROJECTION];

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("no projection {0:?} in the audit service (known: audit_trail, analytics)")]
    Unknown(String),
    #[error(transparent)]
    Reset(#[from] projection::ResetError),
    #[error("event log: {0}")]
    Log(#[from] promptops_eventlog::StoreError),
    #[error("read model: {0}")]
    Database(#[from] sqlx::Error),
}

/// How far a rebuild got: per stream, the position replayed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub projection: &'static str,
    pub positions: Vec<(&'static str, u64)>,
    pub checkpoints_signed: usize,
}

pub async fn rebuild(
    log: &EventLog,
    db: &AnyPool,
    signer: &Signer,
    name: &str,
) -> Result<Rebuilt, RebuildError> {
    match name {
        crate::trail::PROJECTION => {
            let positions = replay(log, db, Arc::new(crate::trail::AuditTrail), &Context::ALL).await?;
            let checkpoints_signed = crate::signing::sign_moved_heads(db, signer).await?;
            Ok(Rebuilt {
                projection: crate::trail::PROJECTION,
                positions,
                checkpoints_signed,
            })
        }
        crate::analytics::PROJECTION => Ok(Rebuilt {
            projection: crate::analytics::PROJECTION,
            positions: replay(
                log,
                db,
                Arc::new(crate::analytics::Analytics),
                &[Context::Execution],
            )
            .await?,
            checkpoints_signed: 0,
        }),
        other => Err(RebuildError::Unknown(other.to_owned())),
    }
}

async fn replay<P: Projection>(
    log: &EventLog,
    db: &AnyPool,
    projection: Arc<P>,
    contexts: &[Context],
) -> Result<Vec<(&'static str, u64)>, RebuildError> {
    projection::reset(log, db, projection.as_ref(), contexts).await?;
    let mut positions = Vec::new();
    for context in contexts {
        let target = log.last_sequence(*context).await?;
        let stop = CancellationToken::new();
        let runner = ProjectionRunner::new(log.clone(), db.clone(), Arc::clone(&projection), *context)
            .run(stop.clone());
        let watch = async {
            loop {
                let at = projection::checkpoint(db, projection.name(), *context).await?;
                if at >= target {
                    stop.cancel();
                    return Ok::<u64, sqlx::Error>(at);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        // The runner returns once `watch` has seen the target and cancelled it.
        let ((), reached) = tokio::join!(runner, watch);
        positions.push((context.stream_name(), reached?));
    }
    Ok(positions)
}
