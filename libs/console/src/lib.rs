//! The web console's files, embedded in the binary at build time (see
//! `build.rs`), and the handler that serves them.
//!
//! - Files under `/assets/` have content hashes in their names: cached for a
//!   year (`immutable`).
//! - Every other path that is not a file is a client route of the single-page
//!   app: it gets `index.html`, never cached, so a new release is picked up on
//!   the next load.
//! - A gzip copy made at build time is sent to clients that accept it.
//! - Pages carry a content security policy that allows nothing but this
//!   origin: the console works without internet, and a regression that loads
//!   from elsewhere fails in the browser tests.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its URL path, e.g. `/assets/index-3f2a1c.js`.
    pub path: &'static str,
    pub body: &'static [u8],
    /// The same bytes, gzip-compressed, where that is smaller.
    pub gzip: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Pages may load, connect to and run workers from this origin only.
/// Monaco sets inline styles, hence `'unsafe-inline'` for styles alone.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; \
worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; \
form-action 'self'; object-src 'none'";

/// Whether the console was built into this binary (`false`: Node was missing).
pub fn is_built() -> bool {
    NOT_BUILT.is_none()
}

/// The embedded file at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

/// Answers a GET or HEAD for `path` from the console: the file itself, or
/// `index.html` for a client route. `None` for other methods.
pub fn respond(method: &Method, path: &str, request_headers: &HeaderMap) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    if let Some(reason) = NOT_BUILT {
        return Some(not_built(reason));
    }
    let (file, is_route) = match asset(path) {
        Some(file) if path != "/index.html" => (file, false),
        _ => {
            // A missing hashed file is a 404, not the app: a stale page
            // asking for an old chunk must fail visibly.
            if path.starts_with("/assets/") {
                return Some(StatusCode::NOT_FOUND.into_response());
            }
            (asset("/index.html")?, true)
        }
    };
    let accepts_gzip = request_headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|coding| coding.trim().starts_with("gzip")));
    let (body, gzip) = match file.gzip {
        Some(gz) if accepts_gzip => (gz, true),
        _ => (file.body, false),
    };
    let mut response = Response::new(if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    });
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(file.path)),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if gzip {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    let cache = if file.path.starts_with("/assets/") && !is_route {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if file.path.ends_with(".html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    Some(response)
}

fn not_built(reason: &'static str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>promptops</title>\
         <body style=\"font-family:system-ui;max-width:40rem;margin:4rem auto\"><h1>promptops</h1>\
         <p>{reason}.</p><p>The HTTP API is at <a href=\"/openapi.json\">/openapi.json</a>.</p></body></html>"
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// The media type for a file name.
pub fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_the_extension() {
        assert_eq!(content_type("/assets/a-1.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/assets/codicon-9.ttf"), "font/ttf");
        assert_eq!(content_type("/noextension"), "application/octet-stream");
    }

    #[test]
    fn only_reads_are_answered() {
        assert!(respond(&Method::POST, "/", &HeaderMap::new()).is_none());
    }

    #[test]
    fn a_client_route_gets_the_app_and_a_missing_chunk_does_not() {
        let Some(page) = respond(&Method::GET, "/prompts/abc", &HeaderMap::new()) else {
            panic!("a GET is answered");
        };
        if is_built() {
            assert_eq!(page.status(), StatusCode::OK);
            assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
            assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            let Some(missing) = respond(&Method::GET, "/assets/gone-123.js", &HeaderMap::new()) else {
                panic!("a GET is answered");
            };
            assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        } else {
            assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }

    #[test]
    fn hashed_assets_are_immutable_and_gzipped_for_clients_that_accept_it() {
        let Some(script) = ASSETS
            .iter()
            .find(|a| a.path.starts_with("/assets/") && a.path.ends_with(".js"))
        else {
            assert!(!is_built(), "a built console has scripts under /assets/");
            return;
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, gzip"));
        let Some(response) = respond(&Method::GET, script.path, &headers) else {
            panic!("a GET is answered");
        };
        assert_eq!(
            response.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            response.headers().get(header::CONTENT_ENCODING).is_some(),
            script.gzip.is_some()
        );
    }
}
