//! A client's connection to another service's gRPC API.
//!
//! Over the network by default (a lazily connected tonic `Channel`). When the
//! service at that address is served by this same process — the all-in-one,
//! `promptops serve` — a call goes straight to the service's router instead:
//! the same router, with the same spans, metrics, authentication and
//! validation, but no socket, no HTTP/2 framing and none of the hand-offs
//! between connection tasks that a loopback call costs (each one a thread
//! wake-up). Which way a call goes is decided per call, so a client made
//! before the service it calls has started switches over once it has.
//!
//! An in-process call runs as a task of its own, as it would in the server
//! over the network: the callee makes progress (and lets go of what it
//! holds, database connections say) whether or not the caller is polling
//! it — a caller that awaits something else between polls of its calls,
//! `buffer_unordered` say, would otherwise stall them. A caller that drops
//! the call cancels the task, as a reset stream would. The server waits for
//! the tasks of in-process calls when it drains.
//!
//! A server registers its router with [`serve_here`] for as long as it
//! listens; a client made with [`Upstream::lazy`] looks for it by address.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::RwLock;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::{BoxError, Service, ServiceExt as _};

/// A router served here, and the tasks of the calls made to it in process.
#[derive(Debug, Clone)]
struct Here {
    router: Router,
    calls: TaskTracker,
}

type Served = RwLock<Vec<(SocketAddr, Here)>>;

/// The gRPC routers this process serves, by listening address.
static SERVED_HERE: Served = RwLock::new(Vec::new());

/// A router served in this process until the registration is dropped.
#[derive(Debug)]
#[must_use = "the router is served in process only while this is kept"]
pub struct Registration {
    addr: SocketAddr,
    calls: TaskTracker,
}

/// Makes `router` reachable in process by clients of `addr`, until the
/// returned registration is ended or dropped.
pub fn serve_here(addr: SocketAddr, router: Router) -> Registration {
    let calls = TaskTracker::new();
    if let Ok(mut served) = SERVED_HERE.write() {
        served.retain(|(a, _)| *a != addr);
        served.push((
            addr,
            Here {
                router,
                calls: calls.clone(),
            },
        ));
    }
    Registration { addr, calls }
}

impl Registration {
    /// Takes no more in-process calls; waits for those in flight.
    pub async fn end(self) {
        let calls = self.calls.clone();
        drop(self);
        calls.close();
        calls.wait().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut served) = SERVED_HERE.write() {
            served.retain(|(a, _)| *a != self.addr);
        }
    }
}

/// Where a client's URL points: a host and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Localhost,
}

impl Target {
    /// Only plain `http://host:port` URLs with an IP or `localhost` can be
    /// served here; anything else (TLS, a DNS name) always goes out.
    fn of(url: &str) -> Option<Self> {
        let uri: http::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let port = uri.port_u16()?;
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
        let host = if host.eq_ignore_ascii_case("localhost") {
            Host::Localhost
        } else {
            Host::Ip(host.parse().ok()?)
        };
        Some(Self { host, port })
    }

    /// Whether a server listening on `addr` is the one this URL reaches.
    fn is_served_by(&self, addr: SocketAddr) -> bool {
        if addr.port() != self.port {
            return false;
        }
        let bound = addr.ip();
        match self.host {
            Host::Ip(ip) => ip == bound || (bound.is_unspecified() && ip.is_loopback()),
            Host::Localhost => bound.is_loopback() || bound.is_unspecified(),
        }
    }

    fn served_here(&self) -> Option<Here> {
        let served = SERVED_HERE.read().ok()?;
        served
            .iter()
            .find(|(addr, _)| self.is_served_by(*addr))
            .map(|(_, here)| here.clone())
    }
}

/// A connection to a service's gRPC API: give it to a generated client
/// (`PromptServiceClient::new(upstream)`). Cheap to clone.
#[derive(Debug)]
pub struct Upstream {
    remote: Channel,
    target: Option<Target>,
    timeout: Option<Duration>,
    /// The way the next call goes, chosen when it is polled ready.
    route: Option<Route>,
}

impl Clone for Upstream {
    /// A clone has not been polled ready: it chooses its own way.
    fn clone(&self) -> Self {
        Self {
            remote: self.remote.clone(),
            target: self.target,
            timeout: self.timeout,
            route: None,
        }
    }
}

#[derive(Debug)]
enum Route {
    Here(Here),
    Remote,
}

impl Upstream {
    /// A client of the service at `url`, connected on first use, with a
    /// 2 s connect timeout and, if given, a limit on the wait for each
    /// response's headers.
    pub fn lazy(url: &str, timeout: Option<Duration>) -> Result<Self, String> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        Ok(Self {
            remote: endpoint.connect_lazy(),
            target: Target::of(url),
            timeout,
            route: None,
        })
    }

    /// Whether calls go to a router in this process right now.
    pub fn is_served_here(&self) -> bool {
        self.target.as_ref().and_then(|t| t.served_here()).is_some()
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

impl Service<http::Request<Body>> for Upstream {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if matches!(self.route, Some(Route::Here(_))) {
            return Poll::Ready(Ok(()));
        }
        if let Some(here) = self.target.as_ref().and_then(|t| t.served_here()) {
            self.route = Some(Route::Here(here));
            return Poll::Ready(Ok(()));
        }
        let ready = self.remote.poll_ready(cx).map_err(BoxError::from);
        if let Poll::Ready(Ok(())) = ready {
            self.route = Some(Route::Remote);
        }
        ready
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self.route.take() {
            Some(Route::Here(here)) => {
                let timeout = self.timeout;
                let call = AbortOnDropHandle::new(here.calls.spawn(here.router.oneshot(request)));
                Box::pin(async move {
                    let response = match timeout {
                        None => call.await,
                        Some(limit) => tokio::time::timeout(limit, call)
                            .await
                            .map_err(|_| BoxError::from(tonic::TimeoutExpired(())))?,
                    };
                    // The router's own error type is `Infallible`; a task
                    // that panicked or was aborted (shutdown) is the error.
                    let response = response.map_err(BoxError::from)?.map_err(BoxError::from)?;
                    Ok(response.map(Body::new))
                })
            }
            // Polled ready on the channel (a call without a poll is the
            // channel's to refuse).
            Some(Route::Remote) | None => {
                let call = self.remote.call(request);
                Box::pin(async move { call.await.map_err(BoxError::from) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_url_is_served_by_the_listener_it_reaches() {
        let loopback = Target::of("http://127.0.0.1:50053").unwrap();
        assert!(loopback.is_served_by(addr("127.0.0.1:50053")));
        assert!(loopback.is_served_by(addr("0.0.0.0:50053")));
        assert!(!loopback.is_served_by(addr("127.0.0.1:50054")));
        assert!(!loopback.is_served_by(addr("10.0.0.7:50053")));

        let localhost = Target::of("http://localhost:50053/").unwrap();
        assert!(localhost.is_served_by(addr("127.0.0.1:50053")));
        assert!(localhost.is_served_by(addr("[::]:50053")));

        let v6 = Target::of("http://[::1]:7000").unwrap();
        assert!(v6.is_served_by(addr("[::1]:7000")));
        assert!(!v6.is_served_by(addr("127.0.0.1:7000")));
    }

    /// A health check through an [`Upstream`] of a service this process
    /// serves goes in process while it listens, and out once it stops.
    #[tokio::test]
    async fn a_service_served_here_is_called_in_process_while_it_listens() {
        use tonic_health::pb::health_client::HealthClient;

        let listener = crate::server::bind(addr("127.0.0.1:0")).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = Upstream::lazy(&url, Some(Duration::from_secs(2))).unwrap();
        assert!(!upstream.is_served_here(), "nothing serves it yet");

        let shutdown = tokio_util::sync::CancellationToken::new();
        let service = crate::server::GrpcService {
            name: crate::config::ServiceName::Prompts,
            routes: tonic::service::Routes::default(),
            grpc_names: vec![],
            readiness: crate::server::Readiness::new(),
        };
        let serving =
            crate::server::serve_grpc(listener, service, shutdown.clone(), Duration::from_millis(100));
        let calls = async {
            let mut health = HealthClient::new(upstream.clone());
            for _ in 0..3 {
                let status = health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .unwrap()
                    .into_inner()
                    .status;
                assert_eq!(
                    status,
                    tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                );
            }
            assert!(upstream.is_served_here());
            let mut ready = upstream.clone();
            std::future::poll_fn(|cx| ready.poll_ready(cx)).await.unwrap();
            assert!(matches!(ready.route, Some(Route::Here(_))), "{:?}", ready.route);
            shutdown.cancel();
        };
        let (served, ()) = tokio::join!(serving, calls);
        served.unwrap();
        assert!(
            !upstream.is_served_here(),
            "the registration ends with the server"
        );
        // Out over the network now: nobody listens there any more.
        let refused = HealthClient::new(upstream)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    }

    /// The callee runs whether or not the caller polls its call (as in a
    /// server over the network), and `end` waits for it.
    #[tokio::test]
    async fn an_in_process_call_makes_progress_while_its_caller_waits_elsewhere() {
        use std::sync::atomic::{AtomicBool, Ordering};

        let answered = std::sync::Arc::new(AtomicBool::new(false));
        let flag = answered.clone();
        let router = Router::new().route(
            "/slow",
            axum::routing::post(move || async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                flag.store(true, Ordering::SeqCst);
                "done"
            }),
        );
        // A port of this process's own, so no other test registers it.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let here = held.local_addr().unwrap();
        let registration = serve_here(here, router);
        let mut upstream = Upstream::lazy(&format!("http://{here}"), None).unwrap();
        std::future::poll_fn(|cx| upstream.poll_ready(cx)).await.unwrap();
        let request = http::Request::post("/slow").body(Body::empty()).unwrap();
        let call = upstream.call(request);
        // Not polled: the caller is busy with something else.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(answered.load(Ordering::SeqCst), "the call waited for its caller");
        assert_eq!(call.await.unwrap().status(), 200);
        registration.end().await;
        assert!(!upstream.is_served_here());
    }

    #[test]
    fn names_tls_and_urls_without_a_port_always_go_out() {
        assert_eq!(Target::of("http://execution:50053"), None);
        assert_eq!(Target::of("https://127.0.0.1:50053"), None);
        assert_eq!(Target::of("http://127.0.0.1"), None);
        assert_eq!(Target::of("not a url"), None);
    }
}
