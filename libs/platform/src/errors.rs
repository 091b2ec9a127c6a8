//! Errors as users see them.
//!
//! Every crate keeps its own error enum and maps it once to an
//! [`ErrorClass`]. The class decides the answer on both protocols through one
//! table, so HTTP and gRPC never disagree: invalid input is 400 /
//! INVALID_ARGUMENT, a concurrent modification 409 / ABORTED, a broken
//! dependency 503 / UNAVAILABLE. Over HTTP the body is problem JSON
//! (RFC 9457); over gRPC the status carries `google.rpc.BadRequest` details
//! naming each invalid field.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt as _};

/// What kind of failure, independent of protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    /// Optimistic concurrency lost: retry after reloading.
    Conflict,
    FailedPrecondition,
    PayloadTooLarge,
    UnsupportedMediaType,
    ResourceExhausted,
    /// A hard spend budget is used up (HTTP 402; gRPC RESOURCE_EXHAUSTED
    /// with the reason in `ErrorInfo`).
    BudgetExceeded,
    Cancelled,
    Unimplemented,
    Unavailable,
    DeadlineExceeded,
    Internal,
}

/// The one table: class, HTTP status, gRPC code, problem slug.
const TABLE: &[(ErrorClass, u16, Code, &str)] = &[
    (
        ErrorClass::InvalidArgument,
        400,
        Code::InvalidArgument,
        "invalid-argument",
    ),
    (
        ErrorClass::Unauthenticated,
        401,
        Code::Unauthenticated,
        "unauthenticated",
    ),
    (
        ErrorClass::PermissionDenied,
        403,
        Code::PermissionDenied,
        "permission-denied",
    ),
    (ErrorClass::NotFound, 404, Code::NotFound, "not-found"),
    (
        ErrorClass::AlreadyExists,
        409,
        Code::AlreadyExists,
        "already-exists",
    ),
    (ErrorClass::Conflict, 409, Code::Aborted, "conflict"),
    (
        ErrorClass::FailedPrecondition,
        400,
        Code::FailedPrecondition,
        "failed-precondition",
    ),
    (
        ErrorClass::PayloadTooLarge,
        413,
        Code::InvalidArgument,
        "payload-too-large",
    ),
    (
        ErrorClass::UnsupportedMediaType,
        415,
        Code::InvalidArgument,
        "unsupported-media-type",
    ),
    (
        ErrorClass::ResourceExhausted,
        429,
        Code::ResourceExhausted,
        "resource-exhausted",
    ),
    (
        ErrorClass::BudgetExceeded,
        402,
        Code::ResourceExhausted,
        "budget-exceeded",
    ),
    (ErrorClass::Cancelled, 499, Code::Cancelled, "cancelled"),
    (
        ErrorClass::Unimplemented,
        501,
        Code::Unimplemented,
        "unimplemented",
    ),
    (ErrorClass::Unavailable, 503, Code::Unavailable, "unavailable"),
    (
        ErrorClass::DeadlineExceeded,
        504,
        Code::DeadlineExceeded,
        "deadline-exceeded",
    ),
    (ErrorClass::Internal, 500, Code::Internal, "internal"),
];

impl ErrorClass {
    fn row(self) -> (ErrorClass, u16, Code, &'static str) {
        TABLE.iter().copied().find(|row| row.0 == self).unwrap_or((
            ErrorClass::Internal,
            500,
            Code::Internal,
            "internal",
        ))
    }

    pub fn http_status(self) -> StatusCode {
        StatusCode::from_u16(self.row().1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn grpc_code(self) -> Code {
        self.row().2
    }

    /// The `type` of the problem JSON: `urn:promptops:problem:<slug>`.
    pub fn problem_type(self) -> String {
        format!("urn:promptops:problem:{}", self.row().3)
    }

    /// The class a gRPC code stands for (the first row with that code).
    pub fn from_grpc_code(code: Code) -> ErrorClass {
        match code {
            Code::Unknown | Code::DataLoss => ErrorClass::Internal,
            Code::OutOfRange => ErrorClass::InvalidArgument,
            code => TABLE
                .iter()
                .find(|row| row.2 == code)
                .map(|row| row.0)
                .unwrap_or(ErrorClass::Internal),
        }
    }
}

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldViolation {
    /// Path of the field, e.g. `name` or `tags[2]`.
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// An error on its way to a client, on either protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub class: ErrorClass,
    pub message: String,
    pub violations: Vec<FieldViolation>,
    /// The budget that refused the request, when one did.
    pub budget: Option<String>,
}

/// The `ErrorInfo` domain of promptops' own reasons.
const ERROR_DOMAIN: &str = "promptops";

impl ServiceError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            violations: Vec::new(),
            budget: None,
        }
    }

    /// Refused by `budget` (its id): `class` is `BudgetExceeded` for spend,
    /// `ResourceExhausted` for a request or token quota.
    pub fn budget(class: ErrorClass, budget: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            budget: Some(budget.into()),
            ..Self::new(class, message)
        }
    }

    /// INVALID_ARGUMENT listing every invalid field.
    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        let message = match violations.as_slice() {
            [one] => format!("{}: {}", one.field, one.description),
            many => format!("{} fields are invalid", many.len()),
        };
        Self {
            class: ErrorClass::InvalidArgument,
            message,
            violations,
            budget: None,
        }
    }

    /// INVALID_ARGUMENT for one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::invalid(vec![FieldViolation::new(field, description)])
    }

    /// An infrastructure failure: logged in full, reported without internals.
    pub fn unavailable(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(ErrorClass::Unavailable, format!("{context}: try again later"))
    }

    /// Reads a gRPC status back (the gateway does, to answer over HTTP).
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let violations = details
            .bad_request()
            .map(|bad| {
                bad.field_violations
                    .iter()
                    .map(|v| FieldViolation::new(v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let info = details.error_info().filter(|info| info.domain == ERROR_DOMAIN);
        let class = info
            .and_then(|info| {
                TABLE
                    .iter()
                    .find(|row| row.3 == info.reason && row.2 == status.code())
            })
            .map_or_else(|| ErrorClass::from_grpc_code(status.code()), |row| row.0);
        Self {
            class,
            message: status.message().to_owned(),
            violations,
            budget: info.and_then(|info| info.metadata.get("budget").cloned()),
        }
    }

    pub fn to_problem(&self) -> Problem {
        let status = self.class.http_status();
        Problem {
            problem_type: self.class.problem_type(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: self.message.clone(),
            errors: self.violations.clone(),
            budget: self.budget.clone(),
        }
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(err: ServiceError) -> Self {
        if err.violations.is_empty() && err.budget.is_none() {
            return tonic::Status::new(err.class.grpc_code(), err.message);
        }
        let mut details = ErrorDetails::new();
        for v in &err.violations {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        if let Some(budget) = &err.budget {
            details.set_error_info(
                err.class.row().3,
                ERROR_DOMAIN,
                [("budget".to_owned(), budget.clone())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            );
        }
        tonic::Status::with_error_details(err.class.grpc_code(), err.message, details)
    }
}

/// Problem details (RFC 9457), the body of every HTTP error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The invalid fields, when the input was invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldViolation>,
    /// The id of the budget that refused the request, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(http::header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_one_row_and_grpc_codes_map_back() {
        for (class, http, code, _) in TABLE {
            assert_eq!(class.http_status().as_u16(), *http);
            assert_eq!(class.grpc_code(), *code);
            assert_eq!(TABLE.iter().filter(|row| row.0 == *class).count(), 1);
        }
        assert_eq!(ErrorClass::from_grpc_code(Code::Aborted), ErrorClass::Conflict);
        assert_eq!(ErrorClass::from_grpc_code(Code::Unavailable).http_status(), 503);
        assert_eq!(
            ErrorClass::from_grpc_code(Code::InvalidArgument).http_status(),
            400
        );
        assert_eq!(ErrorClass::from_grpc_code(Code::DataLoss), ErrorClass::Internal);
    }

    #[test]
    fn field_violations_survive_the_grpc_round_trip() {
        let err = ServiceError::invalid(vec![
            FieldViolation::new("name", "must not be empty"),
            FieldViolation::new("tags[1]", "too long"),
        ]);
        let status: tonic::Status = err.clone().into();
        assert_eq!(status.code(), Code::InvalidArgument);
        let back = ServiceError::from_status(&status);
        assert_eq!(back, err);
        let problem = back.to_problem();
        assert_eq!(problem.status, 400);
        assert_eq!(problem.problem_type, "urn:promptops:problem:invalid-argument");
        assert_eq!(problem.errors.len(), 2);
    }

    #[test]
    fn a_refusing_budget_survives_the_grpc_round_trip_as_402_or_429() {
        for (class, http) in [
            (ErrorClass::BudgetExceeded, 402),
            (ErrorClass::ResourceExhausted, 429),
        ] {
            let err = ServiceError::budget(class, "team-spend", "budget team-spend is used up");
            let status: tonic::Status = err.clone().into();
            assert_eq!(status.code(), Code::ResourceExhausted);
            let back = ServiceError::from_status(&status);
            assert_eq!(back, err);
            let problem = back.to_problem();
            assert_eq!(problem.status, http);
            assert_eq!(problem.budget.as_deref(), Some("team-spend"));
        }
        assert_eq!(
            ErrorClass::from_grpc_code(Code::ResourceExhausted),
            ErrorClass::ResourceExhausted
        );
    }
}
