//! `/api/v1/auth/*` and `/.well-known/jwks.json`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};
use promptops_platform::errors::{ErrorClass, Problem, ServiceError};
use serde::Deserialize;
use utoipa::ToSchema;

use super::AppState;
use super::authn::Authenticated;
use super::extract::ApiJson;
use crate::identity::service::{Client, LoginError, MeView, TokenResponse};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    pub email: String,
    /// 12-128 characters; not a common password; not containing your email name.
    pub password: String,
    #[serde(default)]
    pub display_name: String,
    /// The name of the org created for you (default "My org").
    #[serde(default)]
    pub org_name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
    /// The org to work in; default: your oldest membership.
    #[serde(default)]
    pub org_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
}

fn client(address: SocketAddr, headers: &HeaderMap) -> Client {
    Client {
        address: address.ip().to_string(),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Tokens are credentials: never cached by anyone on the way.
fn tokens(status: StatusCode, body: TokenResponse) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Create an account: a user, an org with the user as owner, and a session.
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignupBody,
    responses(
        (status = 201, description = "Signed up and logged in", body = TokenResponse),
        (status = 400, description = "Invalid email, weak password (each reason listed)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An account with this email exists", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn signup(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignupBody>,
) -> Result<Response, ServiceError> {
    let identity = state.identity.clone();
    let client = client(address, &headers);
    // Runs to completion even if the client disconnects.
    let created = state
        .background
        .spawn(promptops_platform::caller::Origin::carried(async move {
            identity
                .signup(
                    &body.email,
                    &body.password,
                    &body.display_name,
                    &body.org_name,
                    &client,
                )
                .await
        }))
        .await
        .map_err(|e| ServiceError::new(ErrorClass::Internal, format!("request task failed: {e}")))?;
    match created {
        Ok(created) => Ok(tokens(StatusCode::CREATED, created)),
        Err(err) => busy_or(err),
    }
}

/// A 429 with `Retry-After: seconds`.
fn retry_later(err: &ServiceError, seconds: u64) -> Response {
    ([(header::RETRY_AFTER, seconds.to_string())], err.to_problem()).into_response()
}

/// Every core hashing passwords (RESOURCE_EXHAUSTED) is a 429 to retry in a
/// second; any other error is itself.
fn busy_or(err: ServiceError) -> Result<Response, ServiceError> {
    if err.class == ErrorClass::ResourceExhausted {
        Ok(retry_later(&err, 1))
    } else {
        Err(err)
    }
}

/// Log in with email and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = TokenResponse),
        (status = 401, description = "Wrong email or password (the same answer for both)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ServiceError> {
    let client = client(address, &headers);
    match state
        .identity
        .login(&body.email, &body.password, body.org_id.as_deref(), &client)
        .await
    {
        Ok(issued) => Ok(tokens(StatusCode::OK, issued)),
        Err(LoginError::Service(err)) => busy_or(err),
        Err(LoginError::Throttled(throttled)) => {
            let seconds = throttled.0.as_secs().max(1);
            let err = ServiceError::new(
                ErrorClass::ResourceExhausted,
                format!("too many failed logins: try again in {seconds} s"),
            );
            Ok(retry_later(&err, seconds))
        }
    }
}

/// Trade a refresh token for new tokens (the old refresh token is spent).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Unknown, spent or revoked refresh token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, ServiceError> {
    let issued = state.identity.refresh(&body.refresh_token).await?;
    Ok(tokens(StatusCode::OK, issued))
}

/// End the session of a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshBody,
    responses((status = 204, description = "Logged out (also for unknown tokens)")))]
pub async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<StatusCode, ServiceError> {
    state.identity.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, serde::Serialize, Deserialize, ToSchema)]
pub struct SetupJson {
    /// False on a new install: the first person to sign up owns the first org.
    pub has_accounts: bool,
}

/// Whether this install has any account yet (for a first-run screen).
#[utoipa::path(get, path = "/api/v1/auth/setup", tag = "auth",
    responses((status = 200, description = "The install's state", body = SetupJson)))]
pub async fn setup(State(state): State<AppState>) -> Result<Json<SetupJson>, ServiceError> {
    Ok(Json(SetupJson {
        has_accounts: state.identity.has_accounts().await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchOrgBody {
    /// One of your orgs (see `GET /api/v1/me`).
    pub org_id: String,
}

/// Who you are: user or API key, this credential's org and role, and every
/// org you belong to.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses(
        (status = 200, description = "The caller", body = MeView),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn me(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
) -> Result<Response, ServiceError> {
    let me = state.identity.me(&principal).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(me)).into_response())
}

/// Start a session in another of your orgs (an org switcher); log out of the
/// old session with its refresh token afterwards.
#[utoipa::path(post, path = "/api/v1/auth/switch-org", tag = "auth", request_body = SwitchOrgBody,
    responses(
        (status = 200, description = "Tokens for the other org", body = TokenResponse),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of that org, or an API key", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn switch_org(
    State(state): State<AppState>,
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Authenticated(principal, _credential): Authenticated,
    ApiJson(body): ApiJson<SwitchOrgBody>,
) -> Result<Response, ServiceError> {
    let client = client(address, &headers);
    let issued = state
        .identity
        .switch_org(&principal, &body.org_id, &client)
        .await?;
    Ok(tokens(StatusCode::OK, issued))
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "JSON Web Key Set")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.identity.jwks()),
    )
        .into_response()
}
