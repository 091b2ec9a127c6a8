//! The embedded default: `promptops serve` alone, no other software.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::time::Duration;

use promptops_e2e::{AllInOne, SERVICES, channel, signup};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Sum of `eventlog_appends_total` over its series.
async fn appends(all: &AllInOne) -> f64 {
    let text = reqwest::get(format!("{}/metrics", all.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("eventlog_appends_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn all_six_services_run_in_one_process_on_the_embedded_default() {
    let mut all = AllInOne::start().await;
    for service in SERVICES {
        let mut health = HealthClient::new(channel(&all.grpc_url(service)).await);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
    let http = reqwest::Client::new();
    let (token, _) = signup(&all.http(), "ada@embedded.test").await;
    let created: Value = http
        .post(format!("{}/api/v1/prompts", all.http()))
        .bearer_auth(&token)
        .json(&json!({"name": "hello", "template": "Hi {{who}}", "request_id": "01a20125-5f0d-73fc-abe4-776e54f36191"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let position = created["position"].as_str().unwrap().to_owned();
    let audit: Value = http
        .get(format!(
            "{}/api/v1/audit/entries?min_position={position}&action_prefix=prompt.",
            all.http()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["action"], "prompt.created", "{audit}");

    // Retrying with the same request id creates nothing new.
    let before = appends(&all).await;
    let retry = http
        .post(format!("{}/api/v1/prompts", all.http()))
        .bearer_auth(&token)
        .json(&json!({"name": "hello", "template": "Hi {{who}}", "request_id": "01a20125-5f0d-73fc-abe4-776e54f36191"}))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    let retried: Value = retry.json().await.unwrap();
    assert_eq!(retried["prompt"]["id"], created["prompt"]["id"]);
    // Bad input appends nothing either.
    let bad = http
        .post(format!("{}/api/v1/prompts", all.http()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("[1, 2")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(appends(&all).await, before);

    // The embedded files are where the configuration says.
    for file in ["eventlog.db", "prompts.db", "audit.db", "gateway.db"] {
        assert!(all.dir.path().join("data").join(file).exists(), "{file}");
    }

    // SIGTERM: drain and exit 0.
    let code = all.process.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", all.process.log());
}

#[tokio::test]
async fn an_invalid_setting_exits_64_naming_the_variable() {
    let binary = promptops_testkit::workspace_binary("promptops").unwrap();
    let output = std::process::Command::new(binary)
        .arg("serve")
        .env("PROMPTOPS_HTTP_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PROMPTOPS_HTTP_ADDR"), "{stderr}");
}

#[tokio::test]
async fn headless_initialisation_creates_the_org_owner_and_key_once() {
    const KEY: &str = "pok_0192c0de0000700080000000000000aa_initial-secret-for-ci";
    let mut all = AllInOne::start_with(&[
        ("PROMPTOPS_INIT_ORG", "acme"),
        ("PROMPTOPS_INIT_USER_EMAIL", "admin@acme.test"),
        ("PROMPTOPS_INIT_USER_PASSWORD", "correct horse battery staple"),
        ("PROMPTOPS_INIT_API_KEY", KEY),
    ])
    .await;
    let http = reqwest::Client::new();
    let use_key = |all: &AllInOne| {
        let http = http.clone();
        let url = format!("{}/api/v1/api-keys", all.http());
        async move {
            let response = http.get(url).bearer_auth(KEY).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let keys = use_key(&all).await;
    assert_eq!(keys["api_keys"].as_array().unwrap().len(), 1);
    assert_eq!(keys["api_keys"][0]["role"], "owner");
    let created = http
        .post(format!("{}/api/v1/prompts", all.http()))
        .bearer_auth(KEY)
        .json(&json!({"name": "from ci", "template": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let login = http
        .post(format!("{}/api/v1/auth/login", all.http()))
        .json(&json!({"email": "admin@acme.test", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    let login: Value = login.json().await.unwrap();
    assert_eq!(login["org_id"], "acme");
    assert_eq!(login["role"], "owner");

    // A restart with the same settings creates nothing new.
    assert_eq!(all.process.terminate(Duration::from_secs(10)), Some(0));
    all.process.start();
    assert!(promptops_e2e::wait_http_ok(&format!("{}/readyz", all.http()), Duration::from_secs(30)).await);
    let keys = use_key(&all).await;
    assert_eq!(keys["api_keys"].as_array().unwrap().len(), 1);
}

/// `cargo run --bin promptops` brings the web console: its page at `/` and at
/// any client route, its hashed assets cached for good, the served API
/// description equal to the one the console's client is generated from, and
/// the API's own 404s untouched.
#[tokio::test]
async fn the_binary_serves_the_web_console_beside_the_api() {
    let all = AllInOne::start().await;
    let http = reqwest::Client::new();
    let page = http.get(format!("{}/", all.http())).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .filter(|src| src.starts_with("/assets/"))
        .expect("index.html loads a hashed script from /assets/");

    let route = http
        .get(format!("{}/prompts/some-id?tab=diff", all.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.unwrap(), html, "a client route gets the app");

    let asset = http
        .get(format!("{}{script}", all.http()))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 200);
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(asset.headers()["content-encoding"], "gzip");

    let api_404 = http
        .get(format!("{}/api/v1/nothing", all.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(api_404.status(), 404);
    assert_eq!(api_404.headers()["content-type"], "application/problem+json");
    let write = http.post(format!("{}/prompts", all.http())).send().await.unwrap();
    assert_eq!(write.status(), 404, "only reads reach the console");

    let served: Value = http
        .get(format!("{}/openapi.json", all.http()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../web/src/api/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(
        served == checked_in,
        "web/src/api/openapi.json differs from the served /openapi.json: regenerate it (README, The web console)"
    );
}
