//! Conversations end to end (embedded all-in-one): context carried from turn
//! to turn, the model switched mid-thread, one turn at a time, failures and
//! bad input, and other orgs kept out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::time::Duration;

use promptops_e2e::{AllInOne, Api, problem_fields, signup};
use reqwest::Method;
use serde_json::{Value, json};

async fn say(api: &Api, token: &str, id: &str, body: Value) -> (reqwest::StatusCode, Value) {
    api.call(
        Method::POST,
        &format!("/api/v1/conversations/{id}/messages"),
        Some(token),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_thread_keeps_its_context_switches_models_and_records_each_turn() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "threads@acme.test").await;
    let t = Some(token.as_str());

    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/conversations",
            t,
            Some(json!({"title": "Support chat", "model": "mock/echo", "system": "Be brief."})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (created["model"].as_str(), created["turn_count"].as_u64()),
        (Some("mock/echo"), Some(0))
    );

    // Turn 1: the system message and the first message.
    let (status, first) = say(&api, &token, &id, json!({"content": "first"})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["run"]["output"], "first");
    // The mock counts words and punctuation, + 3 per message, + 3:
    // "Be brief." (3 + 3) + "first" (1 + 3) + 3.
    assert_eq!(first["run"]["usage"]["input_tokens"], 13);

    // Turn 2 carries turn 1 (its message and answer) as context.
    let (status, second) = say(&api, &token, &id, json!({"content": "second"})).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        first["run"]["usage"]["input_tokens"].as_u64().unwrap() + 4 + 4,
        21
    );
    assert_eq!(second["run"]["usage"]["input_tokens"], 21);

    // Turn 3 on another model: it answers, and stays the thread's model.
    let (status, third) = say(
        &api,
        &token,
        &id,
        json!({"content": "third", "model": "mock/lorem",
        "parameters": {"max_tokens": 5}}),
    )
    .await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["run"]["model"], "mock/lorem");
    assert_eq!(third["run"]["output"], "Lorem ipsum dolor sit amet,");

    // Streamed: the final event comes once the turn is recorded, so the next
    // message right after it is accepted.
    let response = api
        .http
        .post(format!("{}/api/v1/conversations/{id}/messages", all.http()))
        .bearer_auth(&token)
        .json(&json!({"content": "fourth", "model": "mock/echo", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.contains("event: completed"), "{text}");
    let (status, fifth) = say(&api, &token, &id, json!({"content": "fifth"})).await;
    assert_eq!(status, 200, "{fifth}");

    let (status, thread) = api
        .call(Method::GET, &format!("/api/v1/conversations/{id}"), t, None)
        .await;
    assert_eq!(status, 200, "{thread}");
    let turns = thread["turns"].as_array().unwrap();
    let summary: Vec<(u64, &str, &str, &str)> = turns
        .iter()
        .map(|t| {
            (
                t["number"].as_u64().unwrap(),
                t["content"].as_str().unwrap(),
                t["model"].as_str().unwrap(),
                t["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "first", "mock/echo", "completed"),
            (2, "second", "mock/echo", "completed"),
            (3, "third", "mock/lorem", "completed"),
            (4, "fourth", "mock/echo", "completed"),
            (5, "fifth", "mock/echo", "completed"),
        ]
    );
    assert_eq!(turns[2]["reply"], "Lorem ipsum dolor sit amet,");
    assert_eq!(turns[0]["run_id"], first["run"]["id"]);
    assert_eq!(
        (thread["model"].as_str(), thread["system"].as_str()),
        (Some("mock/echo"), Some("Be brief."))
    );

    // The run of turn 5 is in the history like any run.
    let (status, run) = api
        .call(
            Method::GET,
            &format!(
                "/api/v1/runs/{}?min_position={}",
                fifth["run"]["id"].as_str().unwrap(),
                fifth["position"].as_str().unwrap()
            ),
            t,
            None,
        )
        .await;
    assert_eq!((status.as_u16(), &run["output"]), (200, &json!("fifth")), "{run}");

    // Listed, newest first, with its turn count.
    let (status, listed) = api
        .call(
            Method::GET,
            &format!(
                "/api/v1/conversations?min_position={}",
                fifth["position"].as_str().unwrap()
            ),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["conversations"][0]["id"], id.as_str());
    assert_eq!(listed["conversations"][0]["turn_count"], 5);
    assert_eq!(listed["conversations"][0]["title"], "Support chat");
}

#[tokio::test]
async fn one_turn_at_a_time_failures_recorded_bad_input_named_and_orgs_apart() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "turns@acme.test").await;
    let (other, _) = signup(&all.http(), "turns@other.test").await;
    let t = Some(token.as_str());

    let (_, slow) = api
        .call(
            Method::POST,
            "/api/v1/conversations",
            t,
            Some(json!({"model": "mock/slow"})),
        )
        .await;
    let id = slow["id"].as_str().unwrap().to_owned();

    // A message while the previous one is being answered: 409.
    let ((status, answered), (busy_status, busy)) = tokio::join!(
        say(&api, &token, &id, json!({"content": "take your time"})),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            say(&api, &token, &id, json!({"content": "hello?"})).await
        }
    );
    assert_eq!(busy_status, 409, "{busy}");
    assert!(busy["detail"].as_str().unwrap().contains("turn 1"), "{busy}");
    assert_eq!(status, 200, "{answered}");

    // Over the model's context window (8,000 tokens for mock/slow): refused
    // before any call, counted.
    let long = "word ".repeat(9_000);
    let (status, problem) = say(&api, &token, &id, json!({"content": long})).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem_fields(&problem), ["messages"]);

    // A failing model: the turn is recorded as failed and is not context later.
    let (status, failed) = say(
        &api,
        &token,
        &id,
        json!({"content": "boom", "model": "mock/fail"}),
    )
    .await;
    assert_eq!(status, 503, "{failed}");
    let (status, after) = say(
        &api,
        &token,
        &id,
        json!({"content": "again", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(status, 200, "{after}");
    let (_, thread) = api
        .call(Method::GET, &format!("/api/v1/conversations/{id}"), t, None)
        .await;
    let statuses: Vec<&str> = thread["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "failed", "completed"], "{thread}");
    let turn_one_reply = thread["turns"][0]["reply"].as_str().unwrap();
    assert!(!turn_one_reply.is_empty());
    assert_eq!(thread["turns"][1]["model"], "mock/fail");
    // "take your time" (3 + 3), its answer of 20 lorem pieces — 23 words and
    // punctuation marks — (23 + 3), "again" (1 + 3), + 3; with the failed
    // "boom" it would be 4 more.
    let context_tokens = (3 + 3) + (23 + 3) + (1 + 3) + 3;
    assert_eq!(after["run"]["usage"]["input_tokens"], context_tokens, "{after}");

    // Bad input, each named.
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/conversations",
            t,
            Some(json!({"model": "nope/x", "title": "x".repeat(201)})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem_fields(&problem), ["title", "model"]);
    let (status, problem) = say(&api, &token, &id, json!({"content": ""})).await;
    assert_eq!(
        (status.as_u16(), problem_fields(&problem)),
        (400, vec!["content".to_owned()])
    );
    let (status, problem) = say(&api, &token, &id, json!({"content": "x", "model": "nope/x"})).await;
    assert_eq!(
        (status.as_u16(), problem_fields(&problem)),
        (400, vec!["model".to_owned()])
    );
    let (status, problem) = say(&api, &token, "not-a-uuid", json!({"content": "x"})).await;
    assert_eq!(
        (status.as_u16(), problem_fields(&problem)),
        (400, vec!["id".to_owned()])
    );
    let (status, _) = say(
        &api,
        &token,
        "0190a6c6-0000-7000-8000-000000000000",
        json!({"content": "x"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = say(&api, &token, &id, json!({"content": "x", "temperature": 1})).await;
    assert_eq!(status, 400, "unknown fields are refused");

    // Another org sees nothing and can add nothing.
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/api/v1/conversations/{id}"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = say(&api, &other, &id, json!({"content": "intrusion"})).await;
    assert_eq!(status, 404);
    let (_, listed) = api
        .call(Method::GET, "/api/v1/conversations", Some(&other), None)
        .await;
    assert_eq!(listed["conversations"], json!([]));
    let (_, thread) = api
        .call(Method::GET, &format!("/api/v1/conversations/{id}"), t, None)
        .await;
    assert_eq!(thread["turn_count"], 3);
}
