//! `AuditService` over gRPC: reads of the audit trail, scoped to the caller's org.

use std::pin::Pin;

use promptops_auth::roles::Permission;
use promptops_platform::authn::Authenticator;
use promptops_platform::errors::{FieldViolation, ServiceError};
use promptops_platform::paging::{Cursor, MAX_PAGE_SIZE, ms_from_timestamp, page_size};
use promptops_platform::read_your_write;
use promptops_proto::audit::v1::audit_service_server::AuditService;
use promptops_proto::audit::v1::{
    AuditEntry, ComplianceReport, ExportAuditEntriesRequest, GetComplianceReportRequest,
    GetRetentionPolicyRequest, ListAuditEntriesRequest, ListAuditEntriesResponse, PrunedChain,
    RetentionPolicy, VerifyAuditTrailRequest, VerifyAuditTrailResponse,
};
use sqlx::AnyPool;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::signing::Signer;
use crate::trail::{self, EntryFilter, PROJECTION};

/// Entries read per batch of an export.
const EXPORT_BATCH: u32 = 1_000;

#[derive(Debug, Clone)]
pub struct AuditApi {
    db: AnyPool,
    auth: Authenticator,
    signer: Signer,
    defaults: RetentionDefaults,
}

/// The deployment's retention defaults.
#[derive(Debug, Clone, Copy)]
pub struct RetentionDefaults {
    pub audit_days: u32,
    pub run_payload_days: u32,
}

impl AuditApi {
    pub fn new(db: AnyPool, auth: Authenticator, signer: Signer, defaults: RetentionDefaults) -> Self {
        Self {
            db,
            auth,
            signer,
            defaults,
        }
    }
}

/// The time range of a verify or a report, with its problems named.
fn range(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
    required: bool,
) -> Result<(Option<i64>, Option<i64>), ServiceError> {
    let from_ms = from.map(|t| ms_from_timestamp(Some(t)));
    let to_ms = to.map(|t| ms_from_timestamp(Some(t)));
    let mut problems = Vec::new();
    if required && from_ms.is_none() {
        problems.push(FieldViolation::new("from", "is required"));
    }
    if required && to_ms.is_none() {
        problems.push(FieldViolation::new("to", "is required"));
    }
    if let (Some(f), Some(t)) = (from_ms, to_ms)
        && t <= f
    {
        problems.push(FieldViolation::new("to", "must be after `from`"));
    }
    if problems.is_empty() {
        Ok((from_ms, to_ms))
    } else {
        Err(ServiceError::invalid(problems))
    }
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<AuditEntry, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        request: Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(Permission::ReadAudit)?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        if page.page_size > MAX_PAGE_SIZE {
            return Err(ServiceError::invalid_field(
                "page.page_size",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            )
            .into());
        }
        let mut filter = req.filter.unwrap_or_default();
        if filter.action_prefix.is_empty() {
            filter.action_prefix = req.action_prefix;
        }
        let filter = EntryFilter::from_proto(&filter, "filter.")?;
        let after = Cursor::decode(&page.page_token, "page.page_token")?;
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let (entries, next) = trail::list(
            &self.db,
            &caller.org_id,
            &filter,
            after.as_ref(),
            page_size(page.page_size),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the audit database", e))?;
        Ok(Response::new(ListAuditEntriesResponse {
            entries,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    type ExportAuditEntriesStream = ExportStream;

    async fn export_audit_entries(
        &self,
        request: Request<ExportAuditEntriesRequest>,
    ) -> Result<Response<Self::ExportAuditEntriesStream>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(Permission::ReadAudit)?;
        let req = request.into_inner();
        let filter = EntryFilter::from_proto(&req.filter.unwrap_or_default(), "filter.")?;
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let db = self.db.clone();
        let org_id = caller.org_id;
        // Batches are read as the client consumes them: nothing is held
        // beyond one batch, and a client that leaves stops the reads.
        let stream = futures::stream::try_unfold(
            (db, org_id, filter, None::<(i64, String)>, false),
            |(db, org_id, filter, after, done)| async move {
                if done {
                    return Ok::<_, Status>(None);
                }
                let batch = trail::export_batch(&db, &org_id, &filter, after.as_ref(), EXPORT_BATCH)
                    .await
                    .map_err(|e| Status::from(ServiceError::unavailable("the audit database", e)))?;
                let done = batch.len() < EXPORT_BATCH as usize;
                let after = batch
                    .last()
                    .map(|e| (ms_from_timestamp(e.occurred_at.as_ref()), e.event_id.clone()))
                    .or(after);
                if batch.is_empty() {
                    return Ok(None);
                }
                Ok(Some((
                    futures::stream::iter(batch.into_iter().map(Ok::<_, Status>)),
                    (db, org_id, filter, after, done),
                )))
            },
        );
        use futures::TryStreamExt as _;
        Ok(Response::new(Box::pin(stream.try_flatten()) as ExportStream))
    }

    async fn verify_audit_trail(
        &self,
        request: Request<VerifyAuditTrailRequest>,
    ) -> Result<Response<VerifyAuditTrailResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(Permission::ReadAudit)?;
        let req = request.into_inner();
        let (from_ms, to_ms) = range(req.from.as_ref(), req.to.as_ref(), false)?;
        let verified = crate::verify::verify_org(&self.db, &self.signer, &caller.org_id, from_ms, to_ms)
            .await
            .map_err(|e| ServiceError::unavailable("the audit database", e))?;
        metrics::counter!("audit_verifications_total", "intact" => verified.intact.to_string()).increment(1);
        Ok(Response::new(verified))
    }

    async fn get_compliance_report(
        &self,
        request: Request<GetComplianceReportRequest>,
    ) -> Result<Response<ComplianceReport>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(Permission::ReadAudit)?;
        let req = request.into_inner();
        let (from_ms, to_ms) = range(req.from.as_ref(), req.to.as_ref(), true)?;
        let report = crate::report::compliance_report(
            &self.db,
            &self.signer,
            &caller.org_id,
            from_ms.unwrap_or_default(),
            to_ms.unwrap_or_default(),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the audit database", e))?;
        Ok(Response::new(report))
    }

    async fn get_retention_policy(
        &self,
        request: Request<GetRetentionPolicyRequest>,
    ) -> Result<Response<RetentionPolicy>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(Permission::ReadAudit)?;
        let req = request.into_inner();
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let unavailable = |e| ServiceError::unavailable("the audit database", e);
        let (audit_days, is_default) =
            crate::retention::audit_days(&self.db, &caller.org_id, self.defaults.audit_days)
                .await
                .map_err(unavailable)?;
        let pruned = crate::retention::pruned_through(&self.db, &caller.org_id)
            .await
            .map_err(unavailable)?;
        let run_payload_days =
            crate::retention::run_payload_days(&self.db, &caller.org_id, self.defaults.run_payload_days)
                .await
                .map_err(unavailable)?;
        Ok(Response::new(RetentionPolicy {
            audit_days,
            default_audit_days: self.defaults.audit_days,
            is_default,
            pruned: pruned
                .into_iter()
                .map(|(chain, through)| PrunedChain { chain, through })
                .collect(),
            run_payload_days,
            default_run_payload_days: self.defaults.run_payload_days,
        }))
    }
}
