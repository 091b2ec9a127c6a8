//! `AuditService` over gRPC: reads of the audit trail, scoped to the caller's org.

use promptops_auth::roles::Permission;
use promptops_platform::authn::Authenticator;
use promptops_platform::errors::{FieldViolation, ServiceError};
use promptops_platform::paging::{Cursor, page_size};
use promptops_platform::read_your_write;
use promptops_proto::audit::v1::audit_service_server::AuditService;
use promptops_proto::audit::v1::{ListAuditEntriesRequest, ListAuditEntriesResponse};
use sqlx::AnyPool;
use tonic::{Request, Response, Status};

use crate::trail::{self, PROJECTION};

const MAX_ACTION_PREFIX: usize = 200;

#[derive(Debug, Clone)]
pub struct AuditApi {
    db: AnyPool,
    auth: Authenticator,
}

impl AuditApi {
    pub fn new(db: AnyPool, auth: Authenticator) -> Self {
        Self { db, auth }
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        request: Request<ListAuditEntriesRequest>,
    ) -> Result<Response<ListAuditEntriesResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(Permission::ReadAudit)?;
        let req = request.into_inner();
        if req.action_prefix.len() > MAX_ACTION_PREFIX {
            return Err(ServiceError::invalid(vec![FieldViolation::new(
                "action_prefix",
                format!("must be at most {MAX_ACTION_PREFIX} bytes"),
            )])
            .into());
        }
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let page = req.page.unwrap_or_default();
        let after = Cursor::decode(&page.page_token, "page.page_token")?;
        let (entries, next) = trail::list(
            &self.db,
            &caller.org_id,
            &req.action_prefix,
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
}
