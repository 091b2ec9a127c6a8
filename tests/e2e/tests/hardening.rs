//! Requests built to make the platform work without bound are refused before
//! the work, at a precise status, without the process growing. (The first
//! part of the hardening issue: rendering; more abuses join this file.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use promptops_e2e::{AllInOne, Api};
use reqwest::Method;
use serde_json::json;

/// Resident memory of a process, in bytes (Linux `/proc`).
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

const GROWTH_BOUND: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn a_render_that_would_be_huge_is_refused_before_it_is_built() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let token = api.signup("render-abuse@hardening.test").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = all.process.pid().unwrap();

    // A normal render first, so the process has its working set.
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/prompts/render",
            Some(&token),
            Some(json!({"draft": {"template": "Hi {{x}}"}, "variables": {"x": "there"}})),
        )
        .await;
    assert_eq!(status, 200);
    let before = resident_bytes(pid);

    // 2,000 uses of a 100 KB value: 200 MB of output (the full-size attack
    // is the same request with a bigger body; the answer is computed from
    // sizes, so it costs the same).
    let template = "{{x}}".repeat(2_000);
    for _ in 0..5 {
        let (status, problem) = api
            .call(
                Method::POST,
                "/api/v1/prompts/render",
                Some(&token),
                Some(json!({"draft": {"template": template}, "variables": {"x": "x".repeat(100_000)}})),
            )
            .await;
        assert_eq!(status, 400, "{problem}");
        let detail = problem["errors"][0]["description"].as_str().unwrap();
        assert!(
            detail.contains("the rendered prompt would be 200000000 bytes; the limit is 2097152 bytes"),
            "{detail}"
        );
    }
    let grown = resident_bytes(pid).saturating_sub(before);
    assert!(grown < GROWTH_BOUND, "the process grew by {grown} bytes");

    // Unclosed `{{` runs are parsed in linear time, and the answer lists the
    // first 100 problems, not 50,000.
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/prompts/render",
            Some(&token),
            Some(json!({"draft": {"template": "{{ a".repeat(50_000)}})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["errors"].as_array().unwrap().len(), 101);
}

/// POSTs a YAML document to the import endpoint.
async fn import_yaml(api: &Api, token: &str, document: String) -> (reqwest::StatusCode, serde_json::Value) {
    let response = api
        .http
        .post(format!("{}/api/v1/prompts/import", api.base))
        .bearer_auth(token)
        .header("content-type", "application/yaml")
        .body(document)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_yaml_import_cannot_expand_and_a_viewer_is_refused_before_parsing() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let owner = api.signup("yaml-owner@hardening.test").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let org = owner["org_id"].as_str().unwrap().to_owned();
    let pid = all.process.pid().unwrap();
    let before = resident_bytes(pid);

    // Billion laughs: nine levels of ten aliases, 10^9 copies of a word.
    let mut bomb = String::from("format: promptops.prompts/v1\nl0: &l0 lol\n");
    for level in 1..10 {
        let refs = vec![format!("*l{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("l{level}: &l{level} [{refs}]\n"));
    }
    bomb.push_str("prompts: []\n");
    let (status, problem) = import_yaml(&api, &token, bomb.clone()).await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["errors"][0]["description"]
            .as_str()
            .unwrap()
            .contains("expands to more than"),
        "{problem}"
    );
    let grown = resident_bytes(pid).saturating_sub(before);
    assert!(grown < GROWTH_BOUND, "the process grew by {grown} bytes");

    // A viewer cannot write anywhere: refused before the document is read
    // (a broken document gets 403, not the 400 that parsing would give).
    let viewer = api
        .member(&token, &org, "yaml-viewer@hardening.test", "viewer")
        .await;
    let viewer_token = viewer["access_token"].as_str().unwrap();
    let (status, problem) = import_yaml(&api, viewer_token, "format: [".to_owned()).await;
    assert_eq!(status, 403, "{problem}");
    let (status, problem) = import_yaml(&api, viewer_token, bomb).await;
    assert_eq!(status, 403, "{problem}");
}
