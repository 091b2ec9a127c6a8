//! `IdentityService` over gRPC: credential introspection for the other
//! services (they verify access tokens themselves and ask here about API keys).

use promptops_proto::common::v1::ActorKind;
use promptops_proto::identity::v1::identity_service_server::IdentityService;
use promptops_proto::identity::v1::{IntrospectCredentialRequest, IntrospectCredentialResponse};
use tonic::{Request, Response, Status};

use super::role_to_pb;
use super::service::Identity;

#[derive(Debug, Clone)]
pub struct IdentityApi {
    identity: Identity,
}

impl IdentityApi {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn introspect_credential(
        &self,
        request: Request<IntrospectCredentialRequest>,
    ) -> Result<Response<IntrospectCredentialResponse>, Status> {
        let principal = self
            .identity
            .authenticate(&request.into_inner().credential)
            .await?;
        Ok(Response::new(IntrospectCredentialResponse {
            org_id: principal.org_id,
            actor_kind: match principal.actor_kind {
                ActorKind::ApiKey => "api_key",
                _ => "user",
            }
            .to_owned(),
            actor_id: principal.actor_id,
            role: role_to_pb(principal.role) as i32,
            scopes: principal.scopes,
        }))
    }
}
