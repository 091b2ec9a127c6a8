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

/// A redirect to wherever `location` says, answered to every request.
async fn redirector(location: String, tasks: &mut tokio::task::JoinSet<()>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tasks.spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let answer = format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    format!("http://{address}/v1")
}

#[tokio::test]
async fn providers_cannot_reach_inside_the_network_unless_the_operator_allows_it() {
    // The operator allows one address (the redirector), nothing else inside.
    let all = AllInOne::start_with(&[("PROMPTOPS_EGRESS_ALLOW", "127.0.0.2")]).await;
    let api = Api::new(all.http());
    let token = api.signup("ssrf@hardening.test").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    let redirect = redirector(format!("{}/api/v1/models", all.http()), &mut tasks).await;
    let cases = [
        ("loopback", format!("{}/v1", all.http())),
        ("ten", "http://10.0.0.1/v1".to_owned()),
        ("one-seven-two", "http://172.16.0.1/v1".to_owned()),
        ("one-nine-two", "http://192.168.1.1/v1".to_owned()),
        ("metadata", "http://169.254.169.254/latest/meta-data".to_owned()),
        ("ipv6-loopback", format!("http://[::1]:{}/v1", all.http_port)),
        (
            "name-of-loopback",
            format!("http://localhost:{}/v1", all.http_port),
        ),
        ("redirect-to-loopback", redirect),
    ];
    for (name, base_url) in cases {
        let (status, problem) = api
            .call(
                Method::PUT,
                &format!("/api/v1/providers/{name}"),
                Some(&token),
                Some(json!({"kind": "openai_compatible", "base_url": base_url})),
            )
            .await;
        assert_eq!(status, 400, "{name}: {problem}");
        let detail = problem["errors"][0]["description"].as_str().unwrap_or_default();
        let expected = if name == "redirect-to-loopback" {
            "it answered 302"
        } else {
            "refused by the egress policy"
        };
        assert!(detail.contains(expected), "{name}: {detail}");
    }

    // Stored without the check, a loopback provider still cannot be called.
    let (status, problem) = api
        .call(
            Method::PUT,
            "/api/v1/providers/sneaky",
            Some(&token),
            Some(json!({"kind": "openai_compatible", "base_url": format!("{}/v1", all.http()), "skip_validation": true})),
        )
        .await;
    assert_eq!(status, 200, "{problem}");
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/models",
            Some(&token),
            Some(json!({"id": "sneaky/m", "upstream_model": "m", "context_window": 8192, "max_output_tokens": 512,
                "input_price_per_mtok_usd": "0.15", "output_price_per_mtok_usd": "0.60"})),
        )
        .await;
    assert_eq!(status, 200, "{problem}");
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            Some(&token),
            Some(json!({"model": "sneaky/m", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_ne!(status, 200, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("refused by the egress policy"),
        "{problem}"
    );
}
