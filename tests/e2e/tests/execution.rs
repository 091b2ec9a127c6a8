//! Running prompts end to end: the mock provider, run records, history, the
//! SSE and OpenAI-compatible endpoints, and — on JetStream — no run left
//! unrecorded when clients go away.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::time::Duration;

use futures::StreamExt as _;
use promptops_e2e::{AllInOne, Api, Cluster, channel, signup, with_token};
use promptops_proto::common::v1::PageRequest;
use promptops_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use promptops_proto::execution::v1::{
    CreateConversationRequest, ExecuteRequest, GetConversationRequest, ListRunsRequest, RunStatus,
    SendMessageRequest, execute_chunk,
};
use promptops_proto::prompts::v1::{ChatMessage, ChatRole};
use reqwest::Method;
use serde_json::{Value, json};

fn fields(problem: &Value) -> Vec<String> {
    promptops_e2e::problem_fields(problem)
}

/// The whole body of a streamed response.
async fn read_all(mut response: reqwest::Response) -> String {
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(10), response.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

#[tokio::test]
async fn runs_on_the_mock_provider_are_recorded_listed_and_priced() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "runs@acme.test").await;
    let t = Some(token.as_str());

    let (status, models) = api.call(Method::GET, "/api/v1/models", t, None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"mock/echo"), "{models}");

    // Raw messages on mock/echo.
    let (status, executed) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            t,
            Some(json!({"model": "mock/echo", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello there, world!"}
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{executed}");
    let run = &executed["run"];
    assert_eq!(run["status"], "completed");
    assert_eq!(run["output"], "Hello there, world!");
    assert_eq!(run["usage"]["output_tokens"], 5);
    assert_eq!(run["usage"]["estimated"], false);
    let input = run["usage"]["input_tokens"].as_u64().unwrap();
    // 0.50 USD per 1M input tokens, 1.50 per 1M output tokens.
    let expected_nano = (input * 500_000 + 5 * 1_500_000 + 500) / 1000;
    assert_eq!(
        run["cost_usd"],
        format!("0.{expected_nano:09}"),
        "cost = tokens × price, exactly"
    );

    // A managed prompt whose version names its model; variables rendered.
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            t,
            Some(
                json!({"name": "say", "folder": "demo", "template": "Say {{ thing }} twice",
                "model": {"model": "mock/echo"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let prompt_id = created["prompt"]["id"].as_str().unwrap().to_owned();
    let (status, managed) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            t,
            Some(json!({"folder": "demo", "name": "say", "variables": {"thing": "hi"}})),
        )
        .await;
    assert_eq!(status, 200, "{managed}");
    assert_eq!(managed["run"]["output"], "Say hi twice");
    assert_eq!(managed["run"]["prompt_version"], 1);

    // Bad input is refused before any call, each problem named.
    for (body, field) in [
        (json!({"folder": "demo", "name": "say"}), "variables.thing"),
        (
            json!({"model": "openai/nope", "messages": [{"role": "user", "content": "x"}]}),
            "model",
        ),
        (
            json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}], "parameters": {"temperature": 7}}),
            "parameters.temperature",
        ),
        (
            json!({"model": "mock/slow", "messages": [{"role": "user", "content": "word ".repeat(9000)}]}),
            "messages",
        ),
        (json!({"messages": [{"role": "user", "content": "x"}]}), "model"),
    ] {
        let (status, problem) = api.call(Method::POST, "/api/v1/executions", t, Some(body)).await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(fields(&problem), [field], "{problem}");
    }

    // A failing provider: a clear error, and the run recorded as failed.
    let (status, failed) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            t,
            Some(json!({"model": "mock/fail", "messages": [{"role": "user", "content": "x"}]})),
        )
        .await;
    assert_eq!(status, 503, "{failed}");
    assert!(
        failed["detail"].as_str().unwrap().contains("recorded as failed"),
        "{failed}"
    );
    // A fallback answers instead, and the run names it; unknown fallbacks are refused.
    let failing = json!({"model": "mock/fail", "fallback_models": ["mock/echo"],
        "messages": [{"role": "user", "content": "saved"}]});
    let (status, saved) = api
        .call(Method::POST, "/api/v1/executions", t, Some(failing))
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["run"]["model"], "mock/echo");
    assert_eq!(saved["run"]["output"], "saved");
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            t,
            Some(json!({"model": "mock/echo", "fallback_models": ["nope/x"],
                "messages": [{"role": "user", "content": "x"}]})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(fields(&problem), ["fallback_models[0]"]);
    // Five failures in a row open mock/fail's circuit: the next call fails at once.
    let fail = json!({"model": "mock/fail", "messages": [{"role": "user", "content": "x"}]});
    for _ in 0..3 {
        let (status, _) = api
            .call(Method::POST, "/api/v1/executions", t, Some(fail.clone()))
            .await;
        assert_eq!(status, 503);
    }
    let (status, open) = api.call(Method::POST, "/api/v1/executions", t, Some(fail)).await;
    assert_eq!(status, 503);
    assert!(
        open["detail"].as_str().unwrap().contains("circuit open"),
        "{open}"
    );

    // History: the prompt's runs, and the failed one by status.
    let position = managed["position"].as_str().unwrap();
    let (status, runs) = api
        .call(
            Method::GET,
            &format!("/api/v1/runs?prompt_id={prompt_id}&min_position={position}"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    let mut failed_runs = Value::Null;
    for _ in 0..100 {
        failed_runs = api
            .call(Method::GET, "/api/v1/runs?status=failed", t, None)
            .await
            .1;
        if !failed_runs["runs"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failed_runs["runs"][0]["model"], "mock/fail", "{failed_runs}");
    let run_id = run["id"].as_str().unwrap();
    let (status, one) = api
        .call(Method::GET, &format!("/api/v1/runs/{run_id}"), t, None)
        .await;
    assert_eq!(
        (status.as_u16(), one["output"].clone()),
        (200, json!("Hello there, world!"))
    );
    let (status, _) = api.call(Method::GET, "/api/v1/runs?status=weird", t, None).await;
    assert_eq!(status, 400);

    // Side by side: the prompt's version on two models, results in order.
    let (status, compared) = api
        .call(
            Method::POST,
            "/api/v1/executions/compare",
            t,
            Some(
                json!({"folder": "demo", "name": "say", "variables": {"thing": "yo"},
                "models": ["mock/echo", "mock/lorem", "mock/fail"]}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{compared}");
    let results = compared["results"].as_array().unwrap();
    assert_eq!(results[0]["variant"], "model:mock/echo");
    assert_eq!(results[0]["run"]["output"], "Say yo twice");
    assert!(
        results[1]["run"]["output"]
            .as_str()
            .unwrap()
            .starts_with("Lorem ipsum")
    );
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("recorded as failed"),
        "{compared}"
    );
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/executions/compare",
            t,
            Some(json!({"folder": "demo", "name": "say"})),
        )
        .await;
    assert_eq!(status, 400, "nothing to compare");

    // Another org sees none of it.
    let (other, _) = signup(&all.http(), "runs@globex.test").await;
    let (status, _) = api
        .call(Method::GET, &format!("/api/v1/runs/{run_id}"), Some(&other), None)
        .await;
    assert_eq!(status, 404);
    let (_, theirs) = api.call(Method::GET, "/api/v1/runs", Some(&other), None).await;
    assert!(theirs["runs"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn streaming_over_sse_and_the_openai_compatible_endpoints() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "stream@acme.test").await;

    // promptops SSE: started, deltas, completed.
    let response = api
        .http
        .post(format!("{}/api/v1/executions", all.http()))
        .bearer_auth(&token)
        .json(&json!({"model": "mock/echo", "stream": true,
            "messages": [{"role": "user", "content": "one two three"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = read_all(response).await;
    assert!(text.starts_with("event: started"), "{text}");
    assert_eq!(text.matches("event: delta").count(), 3, "{text}");
    assert!(text.contains("event: completed"), "{text}");
    assert!(text.contains("\"output\":\"one two three\""), "{text}");

    // OpenAI wire format, not streamed.
    let (status, completion) = api
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(json!({"model": "mock/echo", "messages": [{"role": "user", "content": "ping"}]})),
        )
        .await;
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["content"], "ping");
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert!(completion["usage"]["total_tokens"].as_u64().unwrap() > 1);

    // Streamed, with usage.
    let response = api
        .http
        .post(format!("{}/v1/chat/completions", all.http()))
        .bearer_auth(&token)
        .json(
            &json!({"model": "mock/echo", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "a b"}]}),
        )
        .send()
        .await
        .unwrap();
    let text = read_all(response).await;
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = data
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "a b");
    assert_eq!(data.last().unwrap()["usage"]["completion_tokens"], 2, "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // A managed prompt through the same endpoint, and the model list.
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            Some(&token),
            Some(json!({"name": "greet", "folder": "support", "model": {"model": "mock/echo"},
                "messages": [{"role": "system", "content": "Formal."}, {"role": "user", "content": "Greet {{who}}"}]})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(json!({"model": "prompt/support/greet#1", "variables": {"who": "Ada"}, "messages": []})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Greet Ada");
    let (status, error) = api
        .call(
            Method::POST,
            "/v1/chat/completions",
            Some(&token),
            Some(json!({"model": "prompt/support/greet#1", "messages": []})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert_eq!(error["error"]["param"], "variables.who", "{error}");
    let (status, models) = api.call(Method::GET, "/v1/models", Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert!(
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "mock/echo")
    );
}

#[tokio::test]
async fn on_jetstream_every_run_ends_recorded_even_when_clients_go_away() {
    let cluster = Cluster::start().await;
    let (token, _) = signup(&cluster.http(), "many@runs.test").await;
    let client = ExecutionServiceClient::new(channel(&cluster.grpc_url("execution")).await);
    const RUNS: usize = 12;
    let request = || ExecuteRequest {
        messages: vec![ChatMessage {
            role: ChatRole::User as i32,
            content: "go".into(),
        }],
        model: "mock/slow".into(),
        ..Default::default()
    };
    let runs = (0..RUNS).map(|i| {
        let mut client = client.clone();
        let token = token.clone();
        async move {
            let mut stream = client
                .execute_stream(with_token(&token, request()))
                .await
                .unwrap()
                .into_inner();
            let Some(Ok(first)) = stream.next().await else {
                panic!("no started chunk")
            };
            let Some(execute_chunk::Kind::Started(run)) = first.kind else {
                panic!("{first:?}")
            };
            if i % 2 == 0 {
                // Half go away after the first token.
                let _ = stream.next().await;
                drop(stream);
                return (run.run_id, None);
            }
            let mut last = None;
            while let Some(Ok(chunk)) = stream.next().await {
                last = chunk.kind;
            }
            (run.run_id, last)
        }
    });
    let results = futures::future::join_all(runs).await;
    for (_, last) in results.iter().filter(|(_, last)| last.is_some()) {
        let Some(execute_chunk::Kind::Completed(run)) = last else {
            panic!("{last:?}")
        };
        assert_eq!(run.status, RunStatus::Completed as i32);
        assert_eq!(run.usage.unwrap().output_tokens, 20);
    }
    // Exactly one terminal record per run: completed or cancelled, none left running.
    let mut client = client.clone();
    let mut seen = Vec::new();
    for _ in 0..200 {
        let listed = client
            .list_runs(with_token(
                &token,
                ListRunsRequest {
                    page: Some(PageRequest {
                        page_size: 100,
                        page_token: String::new(),
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .runs;
        seen = listed;
        if seen.len() == RUNS && seen.iter().all(|r| r.status != RunStatus::Running as i32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.len(), RUNS);
    let count = |s: RunStatus| seen.iter().filter(|r| r.status == s as i32).count();
    assert_eq!(
        (count(RunStatus::Completed), count(RunStatus::Cancelled)),
        (RUNS / 2, RUNS / 2),
        "{seen:?}"
    );
    for run in seen.iter().filter(|r| r.status == RunStatus::Cancelled as i32) {
        assert!(
            run.output.starts_with("Lorem"),
            "the partial output is kept: {run:?}"
        );
    }
    let ids: std::collections::HashSet<&str> = results.iter().map(|(id, _)| id.as_str()).collect();
    assert!(seen.iter().all(|r| ids.contains(r.run_id.as_str())));

    // A conversation on JetStream: a turn whose client goes away mid-answer
    // is recorded as cancelled with what had arrived, and the thread goes on.
    let conversation = client
        .create_conversation(with_token(
            &token,
            CreateConversationRequest {
                model: "mock/slow".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let message = |content: &str| SendMessageRequest {
        conversation_id: conversation.id.clone(),
        content: content.into(),
        ..Default::default()
    };
    let mut stream = client
        .send_message_stream(with_token(&token, message("leaving")))
        .await
        .unwrap()
        .into_inner();
    let _started = stream.next().await;
    let _first_token = stream.next().await;
    drop(stream);
    let mut turns = Vec::new();
    for _ in 0..100 {
        turns = client
            .get_conversation(with_token(
                &token,
                GetConversationRequest {
                    id: conversation.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .turns;
        if turns.iter().all(|t| t.status != RunStatus::Running as i32) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].status, RunStatus::Cancelled as i32, "{turns:?}");
    assert!(turns[0].reply.starts_with("Lorem"), "{turns:?}");
    let answered = client
        .send_message(with_token(
            &token,
            SendMessageRequest {
                model: "mock/echo".into(),
                ..message("still there?")
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.run.unwrap().output, "still there?");
}

/// The Python interpreter of the venv `scripts/test.sh` makes (`openai` installed).
fn python() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join("target/pyenv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh (it creates the venv with the openai package)",
        python.display()
    );
    python
}

#[tokio::test]
async fn the_official_openai_python_package_works_unchanged() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "sdk@acme.test").await;
    let (status, key) = api
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(&token),
            Some(json!({"name": "sdk", "role": "editor"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            Some(&token),
            Some(
                json!({"name": "greet", "folder": "support", "model": {"model": "mock/echo"},
                "template": "Greet {{who}}"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["prompt"]["id"].as_str().unwrap();
    let (status, _) = api
        .call(
            Method::PUT,
            &format!("/api/v1/prompts/{id}/labels/production"),
            Some(&token),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 200);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openai_sdk.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .env("PROMPTOPS_URL", all.http())
        .env("PROMPTOPS_API_KEY", key["secret"].as_str().unwrap())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("ok: ").count(), 7, "{stdout}");
}

#[tokio::test]
async fn runs_are_cut_at_the_timeout_and_runs_of_a_killed_process_are_closed_as_abandoned() {
    let mut all = AllInOne::start_with(&[("PROMPTOPS_RUN_TIMEOUT_SECS", "1")]).await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "sweep@acme.test").await;
    let slow = json!({"model": "mock/slow", "messages": [{"role": "user", "content": "go"}]});

    // mock/slow needs 1.05 s: over the 1 s run timeout.
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            Some(&token),
            Some(slow.clone()),
        )
        .await;
    assert_eq!(status, 503, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("run timeout"),
        "{problem}"
    );

    // Kill the process mid-run; after the restart the run is closed.
    let mut body = slow;
    body["stream"] = json!(true);
    let mut response = api
        .http
        .post(format!("{}/api/v1/executions", all.http()))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = response.chunk().await.unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let started: Value =
        serde_json::from_str(text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
    let run_id = started["id"].as_str().unwrap().to_owned();
    all.process.kill();
    drop(response);
    all.process.start();
    assert!(
        promptops_e2e::wait_http_ok(&format!("{}/readyz", all.http()), Duration::from_secs(30)).await,
        "{}",
        all.process.log()
    );
    let mut run = Value::Null;
    for _ in 0..200 {
        run = api
            .call(Method::GET, &format!("/api/v1/runs/{run_id}"), Some(&token), None)
            .await
            .1;
        if run["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["error"].as_str().unwrap().starts_with("abandoned"), "{run}");
}
