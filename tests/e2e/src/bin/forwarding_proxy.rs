//! `forwarding-proxy`: the floor of the overhead benchmark.
//!
//! An HTTP server that forwards every request unchanged (method, path,
//! content type, body) to one upstream and streams the answer back as it
//! arrives: no authentication, no parsing, no run, no log. It is built from
//! the crates the gateway is built from (tokio, axum, reqwest, mimalloc), so
//! its overhead is what any Rust gateway pays on this machine for the extra
//! HTTP hop alone — the part of the platform's overhead that is not the
//! platform's.
//!
//!     forwarding-proxy --listen 127.0.0.1:8091 --upstream http://127.0.0.1:8090

#![allow(clippy::print_stderr, reason = "a command-line tool's own errors")]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse as _, Response};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: forwarding-proxy --listen <addr:port> --upstream <http://host:port>";

/// Where requests go.
struct Upstream {
    base: String,
    client: reqwest::Client,
}

fn main() -> ExitCode {
    let mut listen = None;
    let mut upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(value)) => listen = Some(value),
            ("--upstream", Some(value)) => upstream = Some(value),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(64);
            }
        }
    }
    let (Some(listen), Some(upstream)) = (listen, upstream) else {
        eprintln!("{USAGE}");
        return ExitCode::from(64);
    };
    let Ok(listen) = listen.parse::<SocketAddr>() else {
        eprintln!("--listen {listen}: not an address and port");
        return ExitCode::from(64);
    };
    let client = match reqwest::Client::builder().tcp_nodelay(true).build() {
        Ok(client) => client,
        Err(err) => {
            eprintln!("cannot make an HTTP client: {err}");
            return ExitCode::from(70);
        }
    };
    let upstream = Arc::new(Upstream {
        base: upstream.trim_end_matches('/').to_owned(),
        client,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start: {err}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("cannot listen on {listen}: {err}");
                return ExitCode::from(70);
            }
        };
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = Router::new().fallback(forward).with_state(upstream);
        match axum::serve(listener, app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("server failed: {err}");
                ExitCode::from(70)
            }
        }
    })
}

/// One request, forwarded; the answer's body streamed back chunk by chunk.
async fn forward(
    State(upstream): State<Arc<Upstream>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = upstream
        .client
        .request(method, format!("{}{path}", upstream.base))
        .body(body);
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    };
    let status = answer.status();
    let content_type = answer.headers().get(CONTENT_TYPE).cloned();
    let chunks = futures::stream::unfold(answer, |mut answer| async move {
        answer.chunk().await.transpose().map(|chunk| (chunk, answer))
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}
