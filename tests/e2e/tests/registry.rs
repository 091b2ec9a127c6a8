//! The prompt registry end to end: over HTTP on the embedded default, files
//! synced by the CLI, and on JetStream + PostgreSQL with concurrent writers
//! and live watchers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use promptops_e2e::{AllInOne, Api, Cluster, channel, signup, text_version, with_token};
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use promptops_proto::prompts::v1::{
    CreatePromptRequest, CreateVersionRequest, MoveLabelRequest, PromptRef, ResolvePromptRequest,
    WatchRequest,
};
use promptops_testkit::workspace_binary;
use reqwest::Method;
use serde_json::{Value, json};

fn fields(problem: &Value) -> Vec<String> {
    promptops_e2e::problem_fields(problem)
}

#[tokio::test]
async fn the_registry_over_http_versions_labels_resolves_diffs_renders_and_exchanges() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "reg@acme.test").await;
    let t = Some(token.as_str());

    // Create with a chat template, model configuration and declared variables.
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            t,
            Some(json!({
                "name": "greeting", "folder": "support/emails", "tags": ["email"],
                "messages": [
                    {"role": "system", "content": "You are {{ tone }}."},
                    {"role": "user", "content": "Greet {{name}}"}
                ],
                "model": {"model": "openai/gpt-4o-mini", "temperature": 0.2},
                "variables": [{"name": "tone", "default": "kind"}, {"name": "name"}],
                "commit_message": "first"
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["prompt"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["prompt"]["latest_version"], 1);

    // Bad input: duplicate name, template problems with positions, the size limit.
    let (status, dup) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            t,
            Some(json!({"name": "greeting", "folder": "/support/emails/", "template": "x"})),
        )
        .await;
    assert_eq!(status, 409, "{dup}");
    let (status, bad) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{id}/versions"),
            t,
            Some(json!({"template": "Hi {{ name }}\nbye {{ oops", "variables": [{"name": "name"}, {"name": "unused"}]})),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(fields(&bad), ["version.template"]);
    assert!(
        bad["errors"][0]["description"]
            .as_str()
            .unwrap()
            .starts_with("2:5: unclosed")
    );
    let (status, bad) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{id}/versions"),
            t,
            Some(json!({"template": "Hi {{ who }}", "variables": [{"name": "name"}]})),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(fields(&bad), ["version.template", "version.variables[0]"]);
    assert!(
        bad["errors"][0]["description"]
            .as_str()
            .unwrap()
            .starts_with("1:4: variable \"who\" is used but not declared"),
        "{bad}"
    );
    let (status, big) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{id}/versions"),
            t,
            Some(json!({"template": "x".repeat(300 * 1024)})),
        )
        .await;
    assert_eq!(status, 400, "{big}");
    assert!(big["detail"].as_str().unwrap().contains("262144 bytes"), "{big}");

    // Version 2 (text), then labels.
    let (status, v2) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{id}/versions"),
            t,
            Some(json!({"template": "Hello {{name}}!\nBye", "model": {"model": "openai/gpt-4o", "max_tokens": 50}, "commit_message": "plain"})),
        )
        .await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(v2["version"]["version"], 2);
    let (status, missing) = api
        .call(
            Method::PUT,
            &format!("/api/v1/prompts/{id}/labels/production"),
            t,
            Some(json!({"version": 9})),
        )
        .await;
    assert_eq!(status, 400, "{missing}");
    assert_eq!(fields(&missing), ["version"]);
    for version in [2, 1] {
        let (status, moved) = api
            .call(
                Method::PUT,
                &format!("/api/v1/prompts/{id}/labels/production"),
                t,
                Some(json!({"version": version, "reason": "release"})),
            )
            .await;
        assert_eq!(status, 200, "{moved}");
        assert_eq!(moved["prompt"]["labels"]["production"], version);
    }

    // Resolve by folder and name at a label, with ETag / If-None-Match.
    let url = format!(
        "{}/api/v1/prompts/resolve?folder=support/emails&name=greeting&label=production",
        all.http()
    );
    let first = api.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["version"]["version"], 1);
    assert_eq!(body["version"]["messages"][0]["role"], "system");
    let again = api
        .http
        .get(&url)
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let (status, latest) = api
        .call(
            Method::GET,
            &format!("/api/v1/prompts/resolve?prompt_id={id}"),
            t,
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), latest["version"]["version"].as_u64()),
        (200, Some(2))
    );
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/api/v1/prompts/resolve?prompt_id={id}&label=staging"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Diff, render (missing variables named), rollback by copy.
    let (status, diff) = api
        .call(
            Method::GET,
            &format!("/api/v1/prompts/{id}/diff?from=1&to=2"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{diff}");
    let changed: Vec<&str> = diff["model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["model.max_tokens", "model.model", "model.temperature"]);
    let (status, render) = api
        .call(
            Method::POST,
            "/api/v1/prompts/render",
            t,
            Some(json!({"prompt_id": id, "version": 1})),
        )
        .await;
    assert_eq!(status, 400, "{render}");
    assert_eq!(fields(&render), ["variables.name"]);
    let (status, render) = api
        .call(
            Method::POST,
            "/api/v1/prompts/render",
            t,
            Some(json!({"prompt_id": id, "label": "production", "variables": {"name": "Ada"}})),
        )
        .await;
    assert_eq!(status, 200, "{render}");
    assert_eq!(render["messages"][0]["content"], "You are kind.");
    assert_eq!(render["messages"][1]["content"], "Greet Ada");
    let (status, copy) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{id}/versions"),
            t,
            Some(json!({"copy_from": 1})),
        )
        .await;
    assert_eq!(status, 201, "{copy}");
    assert_eq!(
        (
            copy["version"]["version"].as_u64(),
            copy["version"]["copied_from"].as_u64()
        ),
        (Some(3), Some(1))
    );

    // Search and browse.
    for (query, expected) in [
        ("q=GREET", 1),
        ("tag=email", 1),
        ("folder=support&recursive=true", 1),
        ("folder=support", 0),
        ("q=nothing-like-this", 0),
    ] {
        let (status, list) = api
            .call(
                Method::GET,
                &format!(
                    "/api/v1/prompts?{query}&min_position={}",
                    copy["position"].as_str().unwrap()
                ),
                t,
                None,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(
            list["prompts"].as_array().unwrap().len(),
            expected,
            "{query}: {list}"
        );
    }

    // Export as YAML, import into another org, export again: the same document.
    let export = |token: String| {
        let http = api.http.clone();
        let url = format!("{}/api/v1/prompts/export?format=yaml", all.http());
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let exported = export(token.clone()).await;
    assert!(exported.contains("format: promptops.prompts/v1"), "{exported}");
    let (other, _) = signup(&all.http(), "reg@globex.test").await;
    let import = |token: String, body: String, dry_run: bool| {
        let http = api.http.clone();
        let url = format!("{}/api/v1/prompts/import?dry_run={dry_run}", all.http());
        async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/yaml")
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, plan) = import(other.clone(), exported.clone(), true).await;
    assert_eq!(status, 200, "{plan}");
    // The other org sees nothing of the first one's prompts.
    let (status, _) = api
        .call(Method::GET, &format!("/api/v1/prompts/{id}"), Some(&other), None)
        .await;
    assert_eq!(status, 404);
    let (status, imported) = import(other.clone(), exported.clone(), false).await;
    assert_eq!(status, 200, "{imported}");
    assert_eq!(export(other.clone()).await, exported);
    let (_, unchanged) = import(other.clone(), exported.clone(), false).await;
    assert_eq!(unchanged["actions"][0]["action"], "unchanged", "{unchanged}");

    // Invalid YAML: the line is named; invalid content: every path, nothing written.
    let (status, problem) = import(other.clone(), "format: x\nprompts: [\n  {name: a\n".into(), false).await;
    assert_eq!(status, 400, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("line "), "{problem}");
    let (status, problem) = import(
        other.clone(),
        "format: promptops.prompts/v1\nprompts:\n  - name: fresh\n    versions: [{template: ok}]\n  - name: broken\n    versions: [{template: 'a {{'}]\n".into(),
        false,
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(fields(&problem), ["prompts[1].versions[0].template"]);
    let (status, _) = api
        .call(
            Method::GET,
            "/api/v1/prompts/resolve?name=fresh",
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, 404, "nothing of an invalid import is written");

    // Archive hides it from lists; restore brings it back.
    let (status, archived) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{id}/archive"),
            t,
            Some(json!({"reason": "old"})),
        )
        .await;
    assert_eq!(status, 200);
    let at = archived["position"].as_str().unwrap();
    let (_, list) = api
        .call(
            Method::GET,
            &format!("/api/v1/prompts?min_position={at}"),
            t,
            None,
        )
        .await;
    let listed = |list: &Value| list["prompts"].as_array().unwrap().len();
    let (_, with_archived) = api
        .call(Method::GET, "/api/v1/prompts?include_archived=true", t, None)
        .await;
    assert_eq!((listed(&list), listed(&with_archived)), (0, 1));
    let (status, refused) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{id}/versions"),
            t,
            Some(json!({"template": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["type"], "urn:promptops:problem:failed-precondition");
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{id}/restore"),
            t,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn protected_labels_follow_the_org_policy_and_roles() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let owner = api.signup("boss@policy.test").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            Some(&token),
            Some(json!({"name": "p", "template": "t"})),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["prompt"]["id"].as_str().unwrap().to_owned();
    // An editor's API key may move `staging` but not the protected `production`.
    let (status, key) = api
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(&token),
            Some(json!({"name": "ci", "role": "editor"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let editor = key["secret"].as_str().unwrap().to_owned();
    let (status, policy) = api
        .call(Method::GET, "/api/v1/prompt-policy", Some(&editor), None)
        .await;
    assert_eq!(
        (status.as_u16(), policy["protected_labels"].clone()),
        (200, json!(["production"]))
    );
    let move_to = |label: &str| format!("/api/v1/prompts/{id}/labels/{label}");
    let (status, _) = api
        .call(
            Method::PUT,
            &move_to("staging"),
            Some(&editor),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, denied) = api
        .call(
            Method::PUT,
            &move_to("production"),
            Some(&editor),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 403, "{denied}");
    assert!(
        denied["detail"].as_str().unwrap().contains("protected"),
        "{denied}"
    );
    // The owner protects `staging` too and unprotects `production`.
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/prompt-policy",
            Some(&editor),
            Some(json!({"protected_labels": ["staging"]})),
        )
        .await;
    assert_eq!(status, 403, "only settings:manage may change the policy");
    let (status, policy) = api
        .call(
            Method::PUT,
            "/api/v1/prompt-policy",
            Some(&token),
            Some(json!({"protected_labels": ["staging", "Bad Label"]})),
        )
        .await;
    assert_eq!(status, 400, "{policy}");
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/prompt-policy",
            Some(&token),
            Some(json!({"protected_labels": ["staging"]})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            Method::PUT,
            &move_to("production"),
            Some(&editor),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(Method::DELETE, &move_to("staging"), Some(&editor), None)
        .await;
    assert_eq!(status, 403);
}

/// Runs `promptops prompts …` against `all`; returns (exit code, stdout, stderr).
fn cli(all: &AllInOne, token: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(workspace_binary("promptops").unwrap())
        .args(args)
        .env("PROMPTOPS_URL", all.http())
        .env("PROMPTOPS_API_KEY", token)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn prompts_push_and_pull_sync_a_directory_idempotently() {
    let all = AllInOne::start().await;
    let (token, _) = signup(&all.http(), "files@acme.test").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("support")).unwrap();
    std::fs::write(
        root.join("support/greeting.yaml"),
        "description: First reply\ntemplate: Hello {{ name }}\nmodel: {model: openai/gpt-4o-mini, temperature: 0.3}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("summarize.yaml"),
        "messages:\n  - {role: system, content: Summarize.}\n  - {role: user, content: '{{ text }}'}\n",
    )
    .unwrap();
    let dir_arg = root.to_str().unwrap();

    let (code, out, err) = cli(&all, &token, &["prompts", "push", dir_arg, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("create    support/greeting"), "{out}");
    assert!(out.contains("2 change(s) would apply (dry run)"), "{out}");
    let (code, out, err) = cli(&all, &token, &["prompts", "push", dir_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 change(s) did apply"), "{out}");
    let (code, out, _) = cli(&all, &token, &["prompts", "push", dir_arg]);
    assert_eq!(code, 0);
    assert!(
        out.contains("0 change(s)"),
        "pushing unchanged files changes nothing: {out}"
    );

    // An edit creates exactly one version.
    std::fs::write(
        root.join("support/greeting.yaml"),
        "description: First reply\ntemplate: Hi {{ name }}\nmodel: {model: openai/gpt-4o-mini, temperature: 0.3}\n",
    )
    .unwrap();
    let (code, out, _) = cli(&all, &token, &["prompts", "push", dir_arg]);
    assert_eq!(code, 0);
    assert!(out.contains("version   support/greeting version 2"), "{out}");

    // Pull into an empty directory, then push it: nothing changes.
    let pulled = tempfile::tempdir().unwrap();
    let (code, out, err) = cli(
        &all,
        &token,
        &["prompts", "pull", pulled.path().to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    let greeting = std::fs::read_to_string(pulled.path().join("support/greeting.yaml")).unwrap();
    assert!(greeting.contains("Hi {{ name }}"), "{greeting}");
    let (code, out, _) = cli(
        &all,
        &token,
        &["prompts", "push", pulled.path().to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert!(out.contains("0 change(s)"), "{out}");

    // Invalid files: readable errors with file and line, non-zero exit, nothing written.
    std::fs::write(root.join("broken.yaml"), "name: ok\ntemplate: [unclosed\n").unwrap();
    std::fs::write(root.join("support/bad.yaml"), "template: 'Hi {{ who'\n").unwrap();
    let (code, _, err) = cli(&all, &token, &["prompts", "push", dir_arg]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("broken.yaml: line 2"), "{err}");
    std::fs::remove_file(root.join("broken.yaml")).unwrap();
    let (code, _, err) = cli(&all, &token, &["prompts", "push", dir_arg]);
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("support/bad.yaml: template: 1:4: unclosed"), "{err}");
}

#[tokio::test]
async fn on_jetstream_concurrent_saves_get_distinct_numbers_and_watchers_see_moves_at_once() {
    let cluster = Cluster::start().await;
    let (token, _) = signup(&cluster.http(), "many@acme.test").await;
    let prompts = PromptServiceClient::new(channel(&cluster.grpc_url("prompts")).await);
    let created = prompts
        .clone()
        .create_prompt(with_token(
            &token,
            CreatePromptRequest {
                name: "hot".into(),
                version: text_version("v1"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let id = created.prompt.unwrap().prompt_id;
    // A second prompts replica: writers of one replica queue for the
    // aggregate; the two replicas race through optimistic concurrency.
    let second_port = promptops_testkit::free_port().unwrap();
    let _second = cluster
        .spawn_replica(
            "prompts",
            "prompts-2",
            &[("PROMPTOPS_PROMPTS_GRPC_ADDR", format!("127.0.0.1:{second_port}"))],
            &format!("http://127.0.0.1:{second_port}/readyz"),
        )
        .await;
    let second = PromptServiceClient::new(channel(&format!("http://127.0.0.1:{second_port}")).await);

    // 16 clients × 4 versions at once on one prompt, half on each replica.
    const CLIENTS: usize = 16;
    const EACH: usize = 4;
    let saves = (0..CLIENTS).map(|c| {
        let mut prompts = if c % 2 == 0 {
            prompts.clone()
        } else {
            second.clone()
        };
        let (token, id) = (token.clone(), id.clone());
        async move {
            let mut numbers = Vec::new();
            for i in 0..EACH {
                let saved = prompts
                    .create_version(with_token(
                        &token,
                        CreateVersionRequest {
                            prompt_id: id.clone(),
                            version: text_version(&format!("client {c} save {i}")),
                            ..Default::default()
                        },
                    ))
                    .await
                    .unwrap_or_else(|s| panic!("save {c}/{i}: {s:?}"))
                    .into_inner();
                numbers.push(saved.version.unwrap().number);
            }
            numbers
        }
    });
    let mut numbers: Vec<u64> = futures::future::join_all(saves)
        .await
        .into_iter()
        .flatten()
        .collect();
    numbers.sort_unstable();
    let expected: Vec<u64> = (2..=(1 + CLIENTS * EACH) as u64).collect();
    assert_eq!(numbers, expected, "every save a distinct number, none lost");
    let mut conflicts = 0.0;
    for base in [
        cluster.grpc_url("prompts"),
        format!("http://127.0.0.1:{second_port}"),
    ] {
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        conflicts += metrics
            .lines()
            .filter(|l| l.starts_with("promptops_aggregate_conflicts_total{aggregate=\"prompt\"}"))
            .filter_map(|l| l.rsplit(" ").next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert!(
        conflicts > 0.0,
        "the optimistic-concurrency path was exercised: {conflicts}"
    );
    // Every version's content is the one its save sent.
    let resolved = prompts
        .clone()
        .resolve_prompt(with_token(
            &token,
            ResolvePromptRequest {
                prompt: Some(PromptRef {
                    prompt_id: id.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.version.unwrap().number, (1 + CLIENTS * EACH) as u64);

    // A gRPC watcher and an SSE watcher on `production`.
    let mut watch = prompts
        .clone()
        .watch(with_token(
            &token,
            WatchRequest {
                prompt: Some(PromptRef {
                    prompt_id: id.clone(),
                    ..Default::default()
                }),
                labels: vec!["production".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let initial = watch.next().await.unwrap().unwrap();
    assert!(
        initial.initial && initial.resolved.is_none(),
        "no production label yet"
    );
    let sse = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/prompts/watch?prompt_id={id}&labels=production",
            cluster.http()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut sse = sse;
    let mut sse_text = String::new();
    let mut latencies = Vec::new();
    let mut after_ack = Vec::new();
    for version in [3_u64, 7, 2, 5, 9] {
        let started = Instant::now();
        prompts
            .clone()
            .move_label(with_token(
                &token,
                MoveLabelRequest {
                    prompt_id: id.clone(),
                    label: "production".into(),
                    version,
                    reason: "release".into(),
                },
            ))
            .await
            .unwrap();
        let acknowledged = started.elapsed();
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the watcher hears of the move")
            .unwrap()
            .unwrap();
        latencies.push(started.elapsed());
        after_ack.push(started.elapsed().saturating_sub(acknowledged));
        assert_eq!(event.resolved.unwrap().version.unwrap().number, version);
        assert!(!event.initial);
    }
    latencies.sort();
    after_ack.sort();
    let median = latencies[latencies.len() / 2];
    println!(
        "watch latency: move sent → version received median {median:?} max {:?}; \
         move acknowledged → received median {:?} max {:?}",
        latencies.last(),
        after_ack[after_ack.len() / 2],
        after_ack.last()
    );
    assert!(median < Duration::from_millis(100), "{latencies:?}");
    // The SSE stream saw the initial state and all five moves.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sse_text.matches("event: version").count() < 6 && Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(1), sse.chunk()).await {
            sse_text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert_eq!(sse_text.matches("event: version").count(), 6, "{sse_text}");
    assert!(sse_text.contains("\"version\":9"), "{sse_text}");
}

/// Polls `call` until it answers `expected` (grants travel as events).
async fn eventually(expected: u16, mut call: impl AsyncFnMut() -> (reqwest::StatusCode, Value)) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = call().await;
        if status == expected || Instant::now() > deadline {
            assert_eq!(status, expected, "{body}");
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn grants_on_folders_and_prompts_raise_a_members_role_there_only() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let owner = api.signup("owner@grants.test").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let org = owner["org_id"].as_str().unwrap().to_owned();
    let create = |folder: &str, name: &str| json!({"name": name, "folder": folder, "template": "t"});
    let (_, a) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            Some(&token),
            Some(create("team-a", "x")),
        )
        .await;
    let (_, b) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            Some(&token),
            Some(create("team-b", "y")),
        )
        .await;
    let (a, b) = (
        a["prompt"]["id"].as_str().unwrap().to_owned(),
        b["prompt"]["id"].as_str().unwrap().to_owned(),
    );
    let viewer = api.member(&token, &org, "viewer@grants.test", "viewer").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let members = api
        .call(Method::GET, "/api/v1/members", Some(&token), None)
        .await
        .1;
    let viewer_id = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "viewer@grants.test")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let save = |id: &str| {
        (
            format!("/api/v1/prompts/{id}/versions"),
            json!({"template": "new"}),
        )
    };
    let (path_a, body) = save(&a);
    let (status, _) = api
        .call(Method::POST, &path_a, Some(&viewer), Some(body.clone()))
        .await;
    assert_eq!(status, 403);

    // Editor on folder team-a (and below); bad targets are 400.
    let grants = format!("/api/v1/members/{viewer_id}/grants");
    let (status, _) = api
        .call(
            Method::PUT,
            &grants,
            Some(&token),
            Some(json!({"role": "editor"})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, denied) = api
        .call(
            Method::PUT,
            &grants,
            Some(&viewer),
            Some(json!({"folder": "team-a", "role": "editor"})),
        )
        .await;
    assert_eq!(status, 403, "{denied}");
    let (status, _) = api
        .call(
            Method::PUT,
            &grants,
            Some(&token),
            Some(json!({"folder": "team-a", "role": "editor"})),
        )
        .await;
    assert_eq!(status, 204);
    let listed = api
        .call(Method::GET, "/api/v1/grants", Some(&token), None)
        .await
        .1;
    assert_eq!(listed["grants"][0]["resource"], "team-a", "{listed}");
    eventually(201, async || {
        api.call(Method::POST, &path_a, Some(&viewer), Some(body.clone()))
            .await
    })
    .await;
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            Some(&viewer),
            Some(create("team-a/sub", "z")),
        )
        .await;
    assert_eq!(status, 201, "below the granted folder");
    let (path_b, _) = save(&b);
    let (status, _) = api
        .call(Method::POST, &path_b, Some(&viewer), Some(body.clone()))
        .await;
    assert_eq!(status, 403, "not in another folder");
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            Some(&viewer),
            Some(create("team-b", "w")),
        )
        .await;
    assert_eq!(status, 403);
    // An editor grant moves ordinary labels, not protected ones.
    let label = |l: &str| format!("/api/v1/prompts/{a}/labels/{l}");
    let (status, _) = api
        .call(
            Method::PUT,
            &label("staging"),
            Some(&viewer),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = api
        .call(
            Method::PUT,
            &label("production"),
            Some(&viewer),
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 403);

    // A grant on one prompt; then both taken back.
    let (status, _) = api
        .call(
            Method::PUT,
            &grants,
            Some(&token),
            Some(json!({"prompt_id": b, "role": "editor"})),
        )
        .await;
    assert_eq!(status, 204);
    eventually(201, async || {
        api.call(Method::POST, &path_b, Some(&viewer), Some(body.clone()))
            .await
    })
    .await;
    for query in ["folder=team-a".to_owned(), format!("prompt_id={b}")] {
        let (status, _) = api
            .call(Method::DELETE, &format!("{grants}?{query}"), Some(&token), None)
            .await;
        assert_eq!(status, 204);
    }
    eventually(403, async || {
        api.call(Method::POST, &path_a, Some(&viewer), Some(body.clone()))
            .await
    })
    .await;
    eventually(403, async || {
        api.call(Method::POST, &path_b, Some(&viewer), Some(body.clone()))
            .await
    })
    .await;
}
