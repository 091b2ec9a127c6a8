//! JSON body and query extractors that reject bad input with problem JSON
//! (400 malformed or mistyped, 413 too large, 415 not JSON) instead of
//! axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use promptops_platform::errors::{ErrorClass, ServiceError};
use serde::de::DeserializeOwned;

/// A JSON request body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ServiceError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ServiceError {
    let class = match rejection.status().as_u16() {
        413 => ErrorClass::PayloadTooLarge,
        415 => ErrorClass::UnsupportedMediaType,
        _ => ErrorClass::InvalidArgument,
    };
    let detail = match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a body with Content-Type: application/json".to_owned()
        }
        other if class == ErrorClass::PayloadTooLarge => {
            tracing::debug!(rejection = %other.body_text(), "body too large");
            "the request body is larger than the limit (PROMPTOPS_MAX_BODY_BYTES)".to_owned()
        }
        other => other.body_text(),
    };
    ServiceError::new(class, detail)
}

/// Query-string parameters.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ServiceError {
    ServiceError::new(ErrorClass::InvalidArgument, rejection.body_text())
}
