//! An org's own providers and models, over HTTP to the standalone mock
//! provider in OpenAI's and Anthropic's formats: keys stored encrypted and
//! never seen again, retries, and failures recorded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use promptops_e2e::{AllInOne, Api, forwarding_proxy, mock_provider, signup};
use reqwest::Method;
use serde_json::{Value, json};

const OPENAI_KEY: &str = "sk-test-0123456789-PLAINTEXTMARKER-openai";
const ANTHROPIC_KEY: &str = "sk-ant-9876543210-PLAINTEXTMARKER-anthropic";

fn model(id: &str, upstream: &str) -> Value {
    json!({"id": id, "upstream_model": upstream, "context_window": 8000, "max_output_tokens": 1000,
        "input_price_per_mtok_usd": "0.15", "output_price_per_mtok_usd": "0.60"})
}

async fn run(api: &Api, token: &str, model: &str) -> (reqwest::StatusCode, Value) {
    api.call(
        Method::POST,
        "/api/v1/executions",
        Some(token),
        Some(
            json!({"model": model, "messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello over http"}]}),
        ),
    )
    .await
}

/// Every file under `dir`, searched for `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn org_providers_over_http_with_encrypted_keys_retries_and_recorded_failures() {
    let all = AllInOne::start_with(&[("PROMPTOPS_MODEL_HEALTH_CHECK_SECS", "1")]).await;
    let (mut mock, mock_url) = mock_provider(all.dir.path()).await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "providers@acme.test").await;
    let t = Some(token.as_str());

    // A provider whose address answers; one that does not is refused.
    let (status, provider) = api
        .call(
            Method::PUT,
            "/api/v1/providers/local",
            t,
            Some(json!({"kind": "openai_compatible", "base_url": format!("{mock_url}/v1"), "api_key": OPENAI_KEY})),
        )
        .await;
    assert_eq!(status, 200, "{provider}");
    assert_eq!(provider["credential_hint"], "sk-…enai");
    assert!(!provider.to_string().contains("PLAINTEXTMARKER"));
    let (status, refused) = api
        .call(
            Method::PUT,
            "/api/v1/providers/dead",
            t,
            Some(json!({"kind": "openai_compatible", "base_url": "http://127.0.0.1:1/v1"})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "base_url");
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/providers/claude",
            t,
            Some(
                json!({"kind": "anthropic", "base_url": format!("{mock_url}/v1"), "api_key": ANTHROPIC_KEY}),
            ),
        )
        .await;
    assert_eq!(status, 200);

    // Models on them; bad ones named field by field.
    for (id, upstream) in [
        ("local/echo", "echo"),
        ("local/flaky", "echo;fail_first=2"),
        ("local/limited", "echo;status=429;retry_after=1"),
        ("local/dropping", "lorem;drop_after=3"),
        ("local/garbled", "echo;malformed=true"),
        ("claude/echo", "echo"),
    ] {
        let (status, body) = api
            .call(Method::POST, "/api/v1/models", t, Some(model(id, upstream)))
            .await;
        assert_eq!(status, 200, "{id}: {body}");
    }
    let mut bad = model("nobody/x", "x");
    bad["output_price_per_mtok_usd"] = json!("-1");
    let (status, problem) = api.call(Method::POST, "/api/v1/models", t, Some(bad)).await;
    assert_eq!(status, 400, "{problem}");
    let (status, problem) = api
        .call(Method::POST, "/api/v1/models", t, Some(model("nobody/x", "x")))
        .await;
    assert_eq!(
        (status.as_u16(), problem["errors"][0]["field"].clone()),
        (400, json!("id")),
        "{problem}"
    );
    let (_, listed) = api.call(Method::GET, "/api/v1/models", t, None).await;
    assert!(
        listed["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "claude/echo")
    );

    // OpenAI's and Anthropic's formats, priced with the org's prices.
    for id in ["local/echo", "claude/echo"] {
        let (status, done) = run(&api, &token, id).await;
        assert_eq!(status, 200, "{id}: {done}");
        let run = &done["run"];
        assert_eq!(run["output"], "hello over http", "{id}");
        let input = run["usage"]["input_tokens"].as_u64().unwrap();
        let output = run["usage"]["output_tokens"].as_u64().unwrap();
        assert_eq!(output, 3);
        let nano = (input * 150_000 + output * 600_000 + 500) / 1000;
        assert_eq!(run["cost_usd"], format!("0.{nano:09}"), "{id}");
    }

    // The providers' rate-limit headers are tracked and shown.
    let (_, listed) = api.call(Method::GET, "/api/v1/models", t, None).await;
    for id in ["local/echo", "claude/echo"] {
        let model = listed["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap();
        assert_eq!(model["rate_limits"]["limit_requests"], 10_000, "{id}: {model}");
        assert!(
            model["rate_limits"]["remaining_requests"].as_u64().unwrap() < 10_000,
            "{model}"
        );
    }

    // Two 503s then an answer: retried, completed.
    let (status, done) = run(&api, &token, "local/flaky").await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["run"]["status"], "completed");
    // Always 429 (Retry-After 1 s): three attempts, then a clear failure.
    let (status, failed) = run(&api, &token, "local/limited").await;
    assert_eq!(status, 503, "{failed}");
    assert!(failed["detail"].as_str().unwrap().contains("429"), "{failed}");
    // Dropped mid-stream and malformed JSON: failures, recorded.
    for id in ["local/dropping", "local/garbled"] {
        let (status, failed) = run(&api, &token, id).await;
        assert_eq!(status, 503, "{id}: {failed}");
        assert!(
            failed["detail"].as_str().unwrap().contains("recorded as failed"),
            "{failed}"
        );
    }

    // Streamed runs are streamed from the provider too: a whole stream
    // completes in either format; a dropped one ends the run as failed after
    // its three pieces reached the client (sent tokens cannot be retried).
    for (id, deltas, end) in [
        ("local/echo", 3, "event: completed"),
        ("claude/echo", 3, "event: completed"),
        ("local/dropping", 3, "event: error"),
    ] {
        let body = json!({"model": id, "stream": true,
            "messages": [{"role": "user", "content": "hello over http"}]});
        let (_, text) = api.text(Method::POST, "/api/v1/executions", t, Some(body)).await;
        assert_eq!(text.matches("event: delta").count(), deltas, "{id}: {text}");
        assert!(text.contains(end), "{id}: {text}");
    }

    // A failing provider model falls back to another provider's.
    let (status, saved) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            t,
            Some(
                json!({"model": "local/garbled", "fallback_models": ["claude/echo"],
                "messages": [{"role": "user", "content": "rescued"}]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["run"]["model"], "claude/echo");
    assert_eq!(saved["run"]["output"], "rescued");

    // Limits per provider: a tight first-byte timeout and a breaker that
    // opens at the first failure; out-of-range limits are named.
    let (status, problem) = api
        .call(
            Method::PUT,
            "/api/v1/providers/tight",
            t,
            Some(
                json!({"kind": "openai_compatible", "base_url": format!("{mock_url}/v1"),
                "limits": {"max_concurrent_calls": 20_000, "open_for_ms": 5}}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let fields: Vec<&Value> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["field"])
        .collect();
    assert_eq!(
        fields,
        [
            &json!("limits.max_concurrent_calls"),
            &json!("limits.open_for_ms")
        ]
    );
    let (status, tight) = api
        .call(
            Method::PUT,
            "/api/v1/providers/tight",
            t,
            Some(
                json!({"kind": "openai_compatible", "base_url": format!("{mock_url}/v1"),
                "limits": {"first_byte_timeout_ms": 200, "failures_to_open": 1, "open_for_ms": 60_000}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{tight}");
    assert_eq!(
        tight["limits"],
        json!({"max_concurrent_calls": 64, "first_byte_timeout_ms": 200, "failures_to_open": 1, "open_for_ms": 60_000})
    );
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/models",
            t,
            Some(model("tight/slow", "echo;latency_ms=1000")),
        )
        .await;
    assert_eq!(status, 200);
    let (status, failed) = run(&api, &token, "tight/slow").await;
    assert_eq!(status, 503, "{failed}");
    assert!(
        failed["detail"].as_str().unwrap().contains("within 200 ms"),
        "{failed}"
    );
    let started = std::time::Instant::now();
    let (status, open) = run(&api, &token, "tight/slow").await;
    assert_eq!(status, 503, "{open}");
    assert!(
        open["detail"].as_str().unwrap().contains("circuit open"),
        "{open}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_millis(200),
        "rejected at once"
    );
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/models?id=tight/slow", t, None)
        .await;
    assert_eq!(status, 204);

    // The breaker closes again: a model whose first three calls fail opens
    // it; after `open_for_ms` one trial call goes through, succeeds, and
    // calls flow again.
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/providers/tight",
            t,
            Some(
                json!({"kind": "openai_compatible", "base_url": format!("{mock_url}/v1"),
                "limits": {"failures_to_open": 1, "open_for_ms": 400}}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/models",
            t,
            Some(model("tight/recovering", "echo;fail_first=3")),
        )
        .await;
    assert_eq!(status, 200);
    let (status, failed) = run(&api, &token, "tight/recovering").await;
    assert_eq!(status, 503, "three attempts, three 503s: {failed}");
    let (status, open) = run(&api, &token, "tight/recovering").await;
    assert_eq!(status, 503);
    assert!(
        open["detail"].as_str().unwrap().contains("circuit open"),
        "{open}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for attempt in ["the trial", "after it"] {
        let (status, done) = run(&api, &token, "tight/recovering").await;
        assert_eq!(status, 200, "{attempt}: {done}");
    }
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/models?id=tight/recovering", t, None)
        .await;
    assert_eq!(status, 204);

    // Removing a provider that still has models is refused.
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/providers/claude", t, None)
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/models?id=claude/echo", t, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(Method::DELETE, "/api/v1/providers/claude", t, None)
        .await;
    assert_eq!(status, 204);

    // The keys are nowhere at rest: not in the databases, the event log, the
    // master key file or the logs.
    // (The scan finds what is there: the account's address is.)
    assert!(!files_containing(all.dir.path(), "providers@acme.test").is_empty());
    for key in [OPENAI_KEY, ANTHROPIC_KEY] {
        assert_eq!(
            files_containing(all.dir.path(), key),
            Vec::<String>::new(),
            "{key}"
        );
    }
    let (_, providers) = api.call(Method::GET, "/api/v1/providers", t, None).await;
    assert!(!providers.to_string().contains("PLAINTEXTMARKER"), "{providers}");

    // Health checks: every model is checked (here every second); when the
    // provider goes away, its models turn unhealthy, over the API and metrics.
    let health = |listed: &Value| {
        listed["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == "local/echo")
            .map(|m| m["health"].clone())
            .unwrap()
    };
    let (_, listed) = api.call(Method::GET, "/api/v1/models", t, None).await;
    assert_eq!(health(&listed)["healthy"], true, "{listed}");
    mock.kill();
    let mut last = Value::Null;
    for _ in 0..100 {
        last = health(&api.call(Method::GET, "/api/v1/models", t, None).await.1);
        if last["healthy"] == false {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last["healthy"], false, "{last}");
    assert!(last["error"].as_str().unwrap().contains("cannot reach"), "{last}");
    let metrics = reqwest::get(format!("{}/metrics", all.http()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("promptops_model_up{model=\"local/echo\"} 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn embeddings_from_the_mock_and_over_http_are_recorded_runs() {
    let all = AllInOne::start().await;
    let (mut mock, mock_url) = mock_provider(all.dir.path()).await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "embeddings@acme.test").await;
    let t = Some(token.as_str());
    let embed = |model: &str, input: Value| {
        api.call(
            Method::POST,
            "/api/v1/embeddings",
            t,
            Some(json!({"model": model, "input": input})),
        )
    };

    // The built-in embedding model: deterministic, one vector per input.
    let (status, built_in) = embed(
        "mock/embed",
        json!(["the cat sat", "the cat sat", "stock prices fell"]),
    )
    .await;
    assert_eq!(status, 200, "{built_in}");
    let vectors: Vec<Vec<f64>> = built_in["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!((vectors.len(), vectors[0].len()), (3, 256));
    assert_eq!(vectors[0], vectors[1]);
    assert_ne!(vectors[0], vectors[2]);
    let run_id = built_in["run"]["id"].as_str().unwrap();
    // The run is in the history, ended, once the projection has it.
    let mut record = Value::Null;
    for _ in 0..50 {
        let (status, body) = api
            .call(Method::GET, &format!("/api/v1/runs/{run_id}"), t, None)
            .await;
        if status == 200 && body["status"] != "running" {
            record = body;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        (record["status"].as_str(), record["model"].as_str()),
        (Some("completed"), Some("mock/embed")),
        "{record}"
    );
    assert_eq!(record["usage"]["input_tokens"], 9);

    // Wrong kinds of model, either way round, and no inputs.
    let (status, problem) = embed("mock/echo", json!("text")).await;
    assert_eq!(
        (status.as_u16(), problem["errors"][0]["field"].as_str()),
        (400, Some("model")),
        "{problem}"
    );
    let (status, problem) = embed("mock/embed", json!([])).await;
    assert_eq!(
        (status.as_u16(), problem["errors"][0]["field"].as_str()),
        (400, Some("inputs")),
        "{problem}"
    );
    let (status, problem) = run(&api, &token, "mock/embed").await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["errors"][0]["description"]
            .as_str()
            .unwrap()
            .contains("embedding model"),
        "{problem}"
    );

    // An org's embedding model on an OpenAI-compatible server.
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/providers/local",
            t,
            Some(json!({"kind": "openai_compatible", "base_url": format!("{mock_url}/v1"), "api_key": OPENAI_KEY})),
        )
        .await;
    assert_eq!(status, 200);
    let mut embedder = model("local/embedder", "text-embedding-3-small");
    embedder["embeddings"] = json!(true);
    let (status, problem) = api
        .call(Method::POST, "/api/v1/models", t, Some(embedder.clone()))
        .await;
    assert_eq!(
        (status.as_u16(), problem["errors"][0]["field"].as_str()),
        (400, Some("max_output_tokens")),
        "{problem}"
    );
    embedder["max_output_tokens"] = json!(0);
    let (status, set) = api.call(Method::POST, "/api/v1/models", t, Some(embedder)).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["embeddings"], true);
    let (status, over_http) = embed("local/embedder", json!("the cat sat")).await;
    assert_eq!(status, 200, "{over_http}");
    // The mock server embeds as the built-in model does, and reports usage.
    assert_eq!(
        over_http["data"][0]["embedding"],
        built_in["data"][0]["embedding"]
    );
    assert_eq!(over_http["run"]["usage"]["input_tokens"], 3);
    assert_eq!(over_http["run"]["usage"]["estimated"], false);
    mock.kill();
}

/// The overhead benchmark's floor forwards what it is sent and streams
/// back what it gets, status included, so its latency is a real answer's.
#[tokio::test]
async fn the_benchmark_floor_forwards_answers_and_streams_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (_mock, mock_url) = mock_provider(dir.path()).await;
    let (_proxy, proxy_url) = forwarding_proxy(dir.path(), &mock_url).await;
    let (direct, proxy) = (Api::new(mock_url), Api::new(proxy_url));
    let body = |stream: bool| {
        json!({"model": "echo", "stream": stream,
            "messages": [{"role": "user", "content": "through the floor"}]})
    };

    let (_, direct_answer) = direct
        .call(Method::POST, "/v1/chat/completions", None, Some(body(false)))
        .await;
    let (status, forwarded) = proxy
        .call(Method::POST, "/v1/chat/completions", None, Some(body(false)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        forwarded["choices"][0]["message"]["content"],
        direct_answer["choices"][0]["message"]["content"]
    );
    assert_eq!(forwarded["choices"][0]["message"]["content"], "through the floor");

    // Streamed: its content type matters too, so the response itself.
    let streamed = proxy
        .http
        .post(format!("{}/v1/chat/completions", proxy.base))
        .json(&body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    assert!(
        streamed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = streamed.text().await.unwrap();
    let content: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(content, "through the floor");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    let (status, _) = proxy
        .call(Method::POST, "/v1/no-such-endpoint", None, Some(body(false)))
        .await;
    assert_eq!(status, 404, "the upstream's status is passed on");
}
