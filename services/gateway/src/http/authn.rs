//! Who is calling the HTTP API: `Authorization: Bearer <access token or API
//! key>`, verified by the identity service. Handlers that take
//! [`Authenticated`] are behind authentication; the allow-list of routes
//! without it is in `http/mod.rs`.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::header;
use http::request::Parts;
use promptops_platform::errors::{ErrorClass, ServiceError};

use super::AppState;
use crate::identity::service::Principal;

/// The verified caller, and the credential it presented (forwarded to the
/// services, which verify it again themselves).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal, pub String);

/// A 401 with `WWW-Authenticate: Bearer`, or a 429 with `Retry-After`.
#[derive(Debug)]
pub struct Unauthenticated(ServiceError);

impl IntoResponse for Unauthenticated {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        if response.status() == http::StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Over a rate limit.
#[derive(Debug)]
pub struct RateLimited(std::time::Duration);

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        let seconds = self.0.as_secs_f64().ceil().max(1.0) as u64;
        let problem = ServiceError::new(
            ErrorClass::ResourceExhausted,
            format!("rate limit exceeded: try again in {seconds} s"),
        )
        .to_problem();
        ([(header::RETRY_AFTER, seconds.to_string())], problem).into_response()
    }
}

/// Why a request was not let through.
#[derive(Debug)]
pub enum Rejected {
    Unauthenticated(Unauthenticated),
    RateLimited(RateLimited),
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        match self {
            Rejected::Unauthenticated(r) => r.into_response(),
            Rejected::RateLimited(r) => r.into_response(),
        }
    }
}

fn bearer(parts: &Parts) -> Result<String, Unauthenticated> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Unauthenticated(ServiceError::new(
                ErrorClass::Unauthenticated,
                "send Authorization: Bearer <access token or API key>",
            ))
        })
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Rejected;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = bearer(parts).map_err(Rejected::Unauthenticated)?;
        let principal = state
            .identity
            .authenticate(&credential)
            .await
            .map_err(|e| Rejected::Unauthenticated(Unauthenticated(e)))?;
        state
            .limiter
            .check(&principal.actor_id, &principal.org_id)
            .map_err(|wait| Rejected::RateLimited(RateLimited(wait)))?;
        Ok(Authenticated(principal, credential))
    }
}
