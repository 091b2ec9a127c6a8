//! Serving: one port per service.
//!
//! Each service's port answers gRPC (its API, `grpc.health.v1` and server
//! reflection) and plain HTTP (`/healthz`, `/readyz`, `/metrics`). Every
//! request gets a span (continuing the caller's W3C trace) and is counted in
//! `promptops_requests_total` and `promptops_request_duration_seconds`.
//!
//! Shutdown, in order: (1) health turns NOT_SERVING so balancers stop
//! sending, (2) the listener stops accepting, (3) in-flight requests finish
//! until the grace deadline, (4) the caller stops its consumers and flushes
//! telemetry.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use http::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tracing::Instrument as _;

use crate::config::ServiceName;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The dependencies `/readyz` checks, by name.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check, e.g. `("eventlog", || log.check_ready())`.
    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Adds the authenticator's check: keys loaded, revocations caught up.
    pub fn with_authenticator(self, auth: crate::authn::Authenticator) -> Self {
        self.with_check("auth", move || {
            let auth = auth.clone();
            async move { auth.check_ready() }
        })
    }

    /// Runs every check (each bounded by 2 s); lists the failing ones.
    pub async fn failures(&self) -> Vec<(&'static str, String)> {
        let mut failures = Vec::new();
        for (name, check) in &self.checks {
            match tokio::time::timeout(Duration::from_secs(2), check()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => failures.push((*name, err)),
                Err(_) => failures.push((*name, "timed out after 2s".to_owned())),
            }
        }
        failures
    }
}

/// `/healthz` (the process is alive), `/readyz` (dependencies answer) and
/// `/metrics` (Prometheus).
pub fn ops_router(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz).with_state(readiness))
        .route("/metrics", get(metrics_text))
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let failures = readiness.failures().await;
    if failures.is_empty() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        let failing: serde_json::Map<String, serde_json::Value> = failures
            .into_iter()
            .map(|(name, err)| (name.to_owned(), serde_json::Value::String(err)))
            .collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "failing": failing})),
        )
            .into_response()
    }
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

/// Adds request spans and metrics to every route of `router`.
pub fn observed(router: Router, service: &'static str) -> Router {
    router
        .route_layer(axum::middleware::from_fn(tag_matched_path))
        .layer(axum::middleware::from_fn_with_state(service, observe))
}

/// Copies the matched route onto the response, for the metrics label.
async fn tag_matched_path(matched: MatchedPath, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.extensions_mut().insert(matched);
    response
}

async fn observe(State(service): State<&'static str>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %if is_grpc { path.clone() } else { format!("{method} {path}") },
        otel.kind = "server",
        service,
        protocol = if is_grpc { "grpc" } else { "http" },
        http.method = %method,
        http.path = %path,
        http.status_code = tracing::field::Empty,
        rpc.grpc.status_code = tracing::field::Empty,
    );
    crate::telemetry::set_parent_from_headers(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    span.record("http.status_code", status.as_u16());
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_owned();
    let route = if is_grpc {
        // Unknown methods answer UNIMPLEMENTED (12): keep them out of labels.
        if grpc_status == "12" {
            "unknown".to_owned()
        } else {
            path
        }
    } else {
        response
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "unmatched".to_owned())
    };
    let code = if is_grpc {
        span.record("rpc.grpc.status_code", grpc_status.as_str());
        grpc_status
    } else {
        status.as_u16().to_string()
    };
    let protocol = if is_grpc { "grpc" } else { "http" };
    metrics::counter!(
        "promptops_requests_total",
        "service" => service, "protocol" => protocol, "route" => route.clone(), "code" => code
    )
    .increment(1);
    metrics::histogram!(
        "promptops_request_duration_seconds",
        "service" => service, "protocol" => protocol, "route" => route
    )
    .record(started.elapsed().as_secs_f64());
    response
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds `addr`, failing with a message that names it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves `router` until `shutdown`, then drains in-flight requests for at
/// most `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), ServeError> {
    let stop = shutdown.clone();
    // Without TCP_NODELAY a small HTTP/2 frame written after another waits
    // for the peer's delayed ACK: ~40 ms per gRPC call on loopback.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await });
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.map_err(ServeError::from),
        () = deadline => {
            tracing::warn!(?grace, "drain deadline passed; closing remaining connections");
            Ok(())
        }
    }
}

/// A service's gRPC API plus health, reflection and the ops routes.
pub struct GrpcService {
    pub name: ServiceName,
    pub routes: tonic::service::Routes,
    /// Fully qualified gRPC service names to report in health checks.
    pub grpc_names: Vec<&'static str>,
    pub readiness: Readiness,
}

impl std::fmt::Debug for GrpcService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcService")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Serves a [`GrpcService`] on `listener` until `shutdown` (see the module
/// docs for the order of shutdown).
pub async fn serve_grpc(
    listener: TcpListener,
    service: GrpcService,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), ServeError> {
    crate::metrics::install();
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(promptops_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Io(std::io::Error::other(e.to_string())))?;
    let names: Vec<&'static str> = std::iter::once("")
        .chain(service.grpc_names.iter().copied())
        .collect();
    for name in &names {
        health.set_service_status(*name, ServingStatus::Serving).await;
    }
    let grpc = service
        .routes
        .add_service(health_service)
        .add_service(reflection)
        .into_axum_router();
    let router = observed(grpc.merge(ops_router(service.readiness)), service.name.as_str());
    // Clients in this process call the router directly while it listens.
    let served_here = crate::upstream::serve_here(listener.local_addr()?, router.clone());

    let stop_serving = shutdown.child_token();
    let health_on_shutdown = {
        let shutdown = shutdown.clone();
        let stop_serving = stop_serving.clone();
        async move {
            shutdown.cancelled().await;
            for name in &names {
                health.set_service_status(*name, ServingStatus::NotServing).await;
            }
            stop_serving.cancel();
        }
    };
    let (_, served) = tokio::join!(health_on_shutdown, serve(listener, router, stop_serving, grace));
    // In-process calls drain like the network's, within the same grace.
    if tokio::time::timeout(grace, served_here.end()).await.is_err() {
        tracing::warn!(?grace, "drain deadline passed with in-process calls in flight");
    }
    served
}
