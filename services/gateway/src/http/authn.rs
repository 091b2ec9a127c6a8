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

/// The verified caller.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// A 401 with `WWW-Authenticate: Bearer`.
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

/// The raw bearer credential, forwarded to the services that verify it.
#[derive(Debug, Clone)]
pub struct Bearer(pub String);

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

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = Unauthenticated;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        bearer(parts).map(Bearer)
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Unauthenticated;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credential = bearer(parts)?;
        state
            .identity
            .authenticate(&credential)
            .await
            .map(Authenticated)
            .map_err(Unauthenticated)
    }
}
