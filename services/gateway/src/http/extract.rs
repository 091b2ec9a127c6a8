//! Request extractors that reject bad input with problem JSON: 400 for
//! malformed or mistyped JSON (naming the field), 413 for a body over the
//! limit, 415 for a body that is not JSON.
//!
//! The JSON body is read by hand rather than through `axum::Json` so that an
//! oversized body is still read (and discarded, up to a cap) before the 413
//! is sent: a server that answers and closes while the client is still
//! writing makes the client see a broken pipe instead of the answer.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use futures::StreamExt as _;
use http::request::Parts;
use promptops_platform::errors::{ErrorClass, ServiceError};
use serde::de::DeserializeOwned;

use super::AppState;

/// A JSON request body, at most `AppState::max_body_bytes`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// How much of an oversized body is read and discarded before answering 413,
/// and for how long, before the connection is simply closed.
const DRAIN_CAP_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_CAP_TIME: Duration = Duration::from_secs(5);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ServiceError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        let limit = state.max_body_bytes;
        let body = request.into_body();
        if !is_json {
            drain(body, 0).await;
            return Err(ServiceError::new(
                ErrorClass::UnsupportedMediaType,
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = read_limited(body, limit).await?;
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let detail = if path == "." || path.is_empty() {
                format!("invalid JSON body: {inner}")
            } else {
                format!("invalid JSON body at {path}: {inner}")
            };
            ServiceError::new(ErrorClass::InvalidArgument, detail)
        })?;
        deserializer
            .end()
            .map_err(|e| ServiceError::new(ErrorClass::InvalidArgument, format!("invalid JSON body: {e}")))?;
        Ok(ApiJson(value))
    }
}

/// A data file uploaded as the raw body (CSV or JSON Lines), at most
/// `AppState::max_upload_bytes`: its media type and bytes.
#[derive(Debug)]
pub struct ApiFile {
    /// `csv` or `jsonl`.
    pub format: &'static str,
    pub bytes: Vec<u8>,
}

/// The data-file format of a media type.
pub fn file_format(content_type: &str) -> Option<&'static str> {
    match content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "text/csv" => Some("csv"),
        "application/jsonl" | "application/x-ndjson" | "application/x-jsonlines" => Some("jsonl"),
        _ => None,
    }
}

impl FromRequest<AppState> for ApiFile {
    type Rejection = ServiceError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let format = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(file_format);
        let limit = state.max_upload_bytes;
        let body = request.into_body();
        let Some(format) = format else {
            drain(body, 0).await;
            return Err(ServiceError::new(
                ErrorClass::UnsupportedMediaType,
                "send the file with Content-Type: text/csv or application/jsonl",
            ));
        };
        let bytes = read_limited(body, limit).await?;
        Ok(ApiFile { format, bytes })
    }
}

/// Reads the body if it is at most `limit` bytes; otherwise drains it and
/// answers 413.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ServiceError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ServiceError::new(
                ErrorClass::InvalidArgument,
                format!("cannot read the request body: {e}"),
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            let seen = bytes.len() + chunk.len();
            drop(bytes);
            drain_stream(stream, seen).await;
            return Err(ServiceError::new(
                ErrorClass::PayloadTooLarge,
                format!("the request body is larger than {limit} bytes (PROMPTOPS_MAX_BODY_BYTES)"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn drain(body: Body, already: usize) {
    drain_stream(body.into_data_stream(), already).await;
}

async fn drain_stream(mut stream: axum::body::BodyDataStream, mut seen: usize) {
    let started = Instant::now();
    while seen < DRAIN_CAP_BYTES && started.elapsed() < DRAIN_CAP_TIME {
        match tokio::time::timeout(DRAIN_CAP_TIME, stream.next()).await {
            Ok(Some(Ok(chunk))) => seen += chunk.len(),
            _ => break,
        }
    }
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
