//! Evaluation end to end: datasets (CSV / JSON Lines, problems by line,
//! export), evaluation runs through the execution service with progress over
//! SSE, aggregates and per-case results, comparison of two runs, bad input,
//! and other orgs kept out (embedded all-in-one); and a run that survives
//! its evaluation service being killed, with every case scored exactly once
//! (real nats-server and PostgreSQL, one process per service).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::collections::HashSet;
use std::time::Duration;

use promptops_e2e::{AllInOne, Api, Cluster, problem_fields, signup};
use reqwest::Method;
use serde_json::{Value, json};

async fn upload(
    api: &Api,
    token: &str,
    dataset: &str,
    content_type: &str,
    body: &str,
) -> (reqwest::StatusCode, Value) {
    let response = api
        .http
        .post(format!("{}/api/v1/datasets/{dataset}/versions", api.base))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn create_prompt(api: &Api, token: &str, name: &str, template: &str, model: &str) -> String {
    let (status, created) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            Some(token),
            Some(json!({"name": name, "folder": "eval", "template": template, "model": {"model": model}})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["prompt"]["id"].as_str().unwrap().to_owned()
}

async fn create_dataset(api: &Api, token: &str, name: &str) -> String {
    let (status, dataset) = api
        .call(
            Method::POST,
            "/api/v1/datasets",
            Some(token),
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(status, 201, "{dataset}");
    dataset["id"].as_str().unwrap().to_owned()
}

/// Follows the run's SSE progress until it has finished; returns the last state.
async fn follow(api: &Api, token: &str, run_id: &str) -> (Value, usize) {
    let response = api
        .http
        .get(format!("{}/api/v1/evaluation-runs/{run_id}/events", api.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut response = response;
    let mut buffer = String::new();
    let mut last = Value::Null;
    let mut events = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                assert!(frame.contains("event: progress"), "{frame}");
                last = serde_json::from_str(data).unwrap();
                events += 1;
            }
        }
    }
    assert_ne!(
        last["status"], "running",
        "the stream ended before the run did: {last}"
    );
    (last, events)
}

async fn results(api: &Api, token: &str, run_id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut token_param = String::new();
    loop {
        let path = format!("/api/v1/evaluation-runs/{run_id}/results?page_size=7{token_param}");
        let (status, page) = api.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(status, 200, "{page}");
        all.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(next) if !next.is_empty() => token_param = format!("&page_token={next}"),
            _ => return all,
        }
    }
}

#[tokio::test]
async fn datasets_runs_results_and_comparisons() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "evals@acme.test").await;
    let t = Some(token.as_str());
    let v1 = create_prompt(&api, &token, "answer", "Q: {{question}}", "mock/echo").await;

    // An execution with a chosen run id is idempotent: asked again, the
    // recorded run comes back and nothing runs twice.
    let once = json!({"prompt_id": v1, "variables": {"question": "once"},
        "run_id": "0192c0de-0000-7000-8000-0000000000aa"});
    let (status, first) = api
        .call(Method::POST, "/api/v1/executions", t, Some(once.clone()))
        .await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = api.call(Method::POST, "/api/v1/executions", t, Some(once)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        (first["run"]["id"].clone(), first["run"]["output"].clone()),
        (again["run"]["id"].clone(), again["run"]["output"].clone())
    );
    assert_eq!(first["run"]["id"], "0192c0de-0000-7000-8000-0000000000aa");
    let (status, bad) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            t,
            Some(json!({"prompt_id": v1, "variables": {"question": "x"}, "run_id": "nope"})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem_fields(&bad)),
        (400, vec!["run_id".to_owned()]),
        "{bad}"
    );

    // A dataset, then a CSV with problems: every one named by line.
    let dataset = create_dataset(&api, &token, "golden").await;
    let (status, again) = api
        .call(
            Method::POST,
            "/api/v1/datasets",
            t,
            Some(json!({"name": "golden"})),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    let (status, problem) = upload(
        &api,
        &token,
        &dataset,
        "text/csv",
        "id,question,expected\na,one,Q: one\nb,two\nc,three,x,extra\n",
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    let details: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "line 3: 2 fields, but the header has 3",
            "line 4: 4 fields, but the header has 3"
        ]
    );
    let (status, problem) = upload(
        &api,
        &token,
        &dataset,
        "application/jsonl",
        "{\"variables\": {}}\n{oops\n",
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["errors"][0]["description"]
            .as_str()
            .unwrap()
            .starts_with("line 2: not valid JSON"),
        "{problem}"
    );
    let (status, problem) = upload(&api, &token, &dataset, "application/json", "[]").await;
    assert_eq!(status, 415, "{problem}");

    // Version 1: ten cases, eight with an expected output matching the echo.
    let mut jsonl = String::new();
    for i in 0..10 {
        let expected = if i < 8 {
            json!(format!("Q: question {i}"))
        } else {
            Value::Null
        };
        jsonl.push_str(&json!({"id": format!("q{i}"), "variables": {"question": format!("question {i}")}, "expected": expected}).to_string());
        jsonl.push('\n');
    }
    let (status, version) = upload(&api, &token, &dataset, "application/jsonl", &jsonl).await;
    assert_eq!(status, 201, "{version}");
    assert_eq!(
        (version["number"].as_u64(), version["case_count"].as_u64()),
        (Some(1), Some(10))
    );
    assert_eq!(version["variables"], json!(["question"]));

    let (status, cases) = api
        .call(
            Method::GET,
            &format!("/api/v1/datasets/{dataset}/cases?page_size=4"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{cases}");
    assert_eq!(cases["cases"].as_array().unwrap().len(), 4);
    assert_eq!(cases["cases"][0]["id"], "q0");
    let next = cases["next_page_token"].as_str().unwrap();
    let (_, rest) = api
        .call(
            Method::GET,
            &format!("/api/v1/datasets/{dataset}/cases?page_size=100&page_token={next}"),
            t,
            None,
        )
        .await;
    assert_eq!(rest["cases"].as_array().unwrap().len(), 6);
    let (status, bad) = api
        .call(
            Method::GET,
            &format!("/api/v1/datasets/{dataset}/cases?page_token=nonsense"),
            t,
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem_fields(&bad)),
        (400, vec!["page_token".to_owned()])
    );

    // Export as CSV and import it again: the same cases.
    let csv = api
        .http
        .get(format!(
            "{}/api/v1/datasets/{dataset}/export?format=csv",
            api.base
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    assert!(
        csv.starts_with("id,question,expected\nq0,question 0,Q: question 0\n"),
        "{csv}"
    );
    let copy = create_dataset(&api, &token, "golden copy").await;
    let (status, copied) = upload(&api, &token, &copy, "text/csv", &csv).await;
    assert_eq!(
        (status.as_u16(), copied["case_count"].as_u64()),
        (201, Some(10)),
        "{copied}"
    );

    // Bad run requests: every problem named before anything runs.
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/evaluation-runs",
            t,
            Some(
                json!({"dataset_id": dataset, "targets": [{"prompt_id": v1, "model": "nope/nope"}],
                "metrics": [{"kind": "meteor"}, {"kind": "regex", "pattern": "("},
                    {"kind": "json_schema", "schema": {"type": "wat"}},
                    {"kind": "script", "script": "let x = ;"},
                    {"kind": "embedding_similarity", "embedding_model": "mock/echo"}], "concurrency": 100}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let mut fields = problem_fields(&problem);
    fields.sort();
    assert_eq!(
        fields,
        [
            "concurrency",
            "metrics[0].kind",
            "metrics[1].pattern",
            "metrics[2].schema",
            "metrics[3].script",
            "metrics[4].embedding_model",
            "targets[0].model"
        ]
    );

    // A version where two rows lack the variable: both rows named, nothing runs.
    let (status, _) = upload(
        &api,
        &token,
        &dataset,
        "text/csv",
        "id,question,topic\nok,fine,x\nno-question,,y\nalso-none,,z\n",
    )
    .await;
    assert_eq!(status, 201);
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/evaluation-runs",
            t,
            Some(json!({"dataset_id": dataset, "targets": [{"prompt_id": v1}], "metrics": [{"kind": "json_valid"}]})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let errors: Vec<(String, String)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["description"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (
                "cases[2]".to_owned(),
                "row 2 (no-question): missing question (needed by targets[0])".to_owned()
            ),
            (
                "cases[3]".to_owned(),
                "row 3 (also-none): missing question (needed by targets[0])".to_owned()
            ),
        ]
    );

    // A run on version 1, followed over SSE to its end.
    let metrics = json!([
        {"kind": "bleu"},
        {"kind": "rougeL", "stem": true},
        {"kind": "exact_match"},
        {"kind": "contains", "values": ["question"], "name": "mentions"},
        {"kind": "length", "max": 12},
        {"kind": "json_schema", "schema": {"type": "object"}},
        {"kind": "script", "name": "words", "script": "output.split(' ').len()"},
        {"kind": "script", "name": "broken", "script": "output.len() / 0"},
        {"kind": "embedding_similarity", "embedding_model": "mock/embed"},
    ]);
    let (status, run) = api
        .call(
            Method::POST,
            "/api/v1/evaluation-runs",
            t,
            Some(
                json!({"dataset_id": dataset, "dataset_version": 1, "targets": [{"prompt_id": v1}],
                "metrics": metrics, "concurrency": 4, "name": "baseline"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    assert_eq!(
        (run["status"].as_str(), run["total"].as_u64()),
        (Some("running"), Some(10))
    );
    let base_id = run["id"].as_str().unwrap().to_owned();
    let (base, events) = follow(&api, &token, &base_id).await;
    assert_eq!(
        base["failed"],
        0,
        "{:?}",
        results(&api, &token, &base_id).await.first()
    );
    assert!(events >= 2, "progress events: {events}");
    assert_eq!(
        (
            base["status"].as_str(),
            base["done"].as_u64(),
            base["failed"].as_u64()
        ),
        (Some("completed"), Some(10), Some(0))
    );
    let aggregate = |run: &Value, metric: &str| {
        run["aggregates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["metric"] == metric)
            .unwrap()
            .clone()
    };
    // The echo answers "Q: question i": identical to the 8 expected outputs.
    assert_eq!(aggregate(&base, "bleu")["count"], 8);
    assert!((aggregate(&base, "bleu")["mean"].as_f64().unwrap() - 100.0).abs() < 1e-9);
    assert_eq!(aggregate(&base, "exact_match")["mean"], 1.0);
    assert_eq!(aggregate(&base, "mentions")["count"], 10);
    // "Q: question 0" is 13 characters: every case fails the length bound.
    assert_eq!(aggregate(&base, "length")["mean"], 0.0);
    // "Q: question 0" is not JSON: the schema assertion fails everywhere.
    assert_eq!(aggregate(&base, "json_schema")["mean"], 0.0);
    // A sandboxed script: "Q: question 0" has three words.
    assert_eq!(aggregate(&base, "words")["mean"], 3.0);
    assert_eq!(aggregate(&base, "broken")["count"], 0);
    // Embeddings of identical texts: cosine 1, for the 8 cases with an expected output.
    let similarity = aggregate(&base, "embedding_similarity");
    assert_eq!(similarity["count"], 8);
    assert!(
        (similarity["mean"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "{similarity}"
    );

    let listed = results(&api, &token, &base_id).await;
    let ids: Vec<&str> = listed.iter().map(|r| r["case_id"].as_str().unwrap()).collect();
    assert_eq!(ids, (0..10).map(|i| format!("q{i}")).collect::<Vec<_>>());
    assert_eq!(listed[0]["output"], "Q: question 0");
    assert!(
        listed[9]["scores"].get("bleu").is_none(),
        "no expected output, no BLEU: {}",
        listed[9]
    );
    let note = listed[0]["notes"][0].as_str().unwrap_or_default();
    assert!(note.starts_with("broken: the script failed"), "{}", listed[0]);
    let (status, run_record) = api
        .call(
            Method::GET,
            &format!("/api/v1/runs/{}", listed[0]["run_id"].as_str().unwrap()),
            t,
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), run_record["output"].as_str()),
        (200, Some("Q: question 0")),
        "{run_record}"
    );

    // A dataset built from the prompt's past runs: their variables, their
    // outputs as the expected outputs.
    let from_runs = create_dataset(&api, &token, "from production").await;
    let (status, version) = api
        .call(
            Method::POST,
            &format!("/api/v1/datasets/{from_runs}/versions/from-runs"),
            t,
            Some(json!({"prompt_id": v1, "prompt_version": 1, "limit": 4})),
        )
        .await;
    assert_eq!(status, 201, "{version}");
    assert_eq!(
        (version["case_count"].as_u64(), version["source_format"].as_str()),
        (Some(4), Some("runs"))
    );
    let (_, cases) = api
        .call(
            Method::GET,
            &format!("/api/v1/datasets/{from_runs}/cases"),
            t,
            None,
        )
        .await;
    for case in cases["cases"].as_array().unwrap() {
        let question = case["variables"]["question"].as_str().unwrap();
        assert_eq!(
            case["expected"].as_str().unwrap(),
            format!("Q: {question}"),
            "{case}"
        );
        assert_eq!(case["metadata"]["run_id"], case["id"]);
    }
    let (status, problem) = api
        .call(
            Method::POST,
            &format!("/api/v1/datasets/{from_runs}/versions/from-runs"),
            t,
            Some(json!({"prompt_id": v1, "prompt_version": 99})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("no finished runs"),
        "{problem}"
    );

    // A second version of the prompt answers differently: compared with the
    // first run, every case with an expected output regressed.
    let (status, version2) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{v1}/versions"),
            t,
            Some(json!({"template": "A: {{question}}", "model": {"model": "mock/echo"}})),
        )
        .await;
    assert_eq!(status, 201, "{version2}");
    let (status, run) = api
        .call(
            Method::POST,
            "/api/v1/evaluation-runs",
            t,
            Some(json!({"dataset_id": dataset, "dataset_version": 1, "targets": [{"prompt_id": v1, "version": 2}],
                "metrics": metrics, "name": "candidate"})),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let candidate_id = run["id"].as_str().unwrap().to_owned();
    let (candidate, _) = follow(&api, &token, &candidate_id).await;
    assert_eq!(candidate["targets"][0]["prompt_version"], 2);
    let (status, comparison) = api
        .call(
            Method::GET,
            &format!(
                "/api/v1/evaluation-runs/{candidate_id}/comparison?against={base_id}&metric=exact_match"
            ),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{comparison}");
    assert_eq!(
        (
            comparison["base_mean"].as_f64(),
            comparison["candidate_mean"].as_f64()
        ),
        (Some(1.0), Some(0.0))
    );
    assert_eq!(comparison["regressed"].as_array().unwrap().len(), 8);
    let (status, bad) = api
        .call(
            Method::GET,
            &format!("/api/v1/evaluation-runs/{candidate_id}/comparison?against={base_id}&metric=nope"),
            t,
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem_fields(&bad)),
        (400, vec!["metric".to_owned()])
    );

    // The prompt's scores over time, per version: the newest run first.
    let position = candidate["position"]
        .as_str()
        .map(|p| format!("&min_position={p}"))
        .unwrap_or_default();
    let (status, history) = api
        .call(
            Method::GET,
            &format!("/api/v1/evaluation-scores?prompt_id={v1}&metric=exact_match{position}"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    let points: Vec<(u64, f64)> = history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["prompt_version"].as_u64().unwrap(), p["mean"].as_f64().unwrap()))
        .collect();
    assert_eq!(points, [(2, 0.0), (1, 1.0)], "{history}");
    let (status, bad) = api
        .call(Method::GET, "/api/v1/evaluation-scores?prompt_id=nope", t, None)
        .await;
    assert_eq!(
        (status.as_u16(), problem_fields(&bad)),
        (400, vec!["prompt_id".to_owned()])
    );

    let (status, runs) = api
        .call(
            Method::GET,
            &format!("/api/v1/evaluation-runs?dataset_id={dataset}"),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{runs}");
    let names: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["candidate", "baseline"]);

    // Another org sees none of it.
    let (other, _) = signup(&all.http(), "rival@other.test").await;
    let o = Some(other.as_str());
    for path in [
        format!("/api/v1/datasets/{dataset}"),
        format!("/api/v1/datasets/{dataset}/cases"),
        format!("/api/v1/evaluation-runs/{base_id}"),
        format!("/api/v1/evaluation-runs/{base_id}/results"),
    ] {
        let (status, body) = api.call(Method::GET, &path, o, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (_, theirs) = api.call(Method::GET, "/api/v1/evaluation-runs", o, None).await;
    assert_eq!(theirs["runs"], json!([]));
    let (_, theirs) = api.call(Method::GET, "/api/v1/datasets", o, None).await;
    assert_eq!(theirs["datasets"], json!([]));
    // The same dataset name is free in another org.
    create_dataset(&api, &other, "golden").await;

    // LLM-as-judge: rubric prompts from the registry, run on a model; the
    // score and the reasoning kept per case. (`mock/echo` answers with the
    // rendered rubric, so the "judge" here is deterministic.)
    create_prompt(
        &api,
        &token,
        "judge",
        "{\"score\": 1, \"reasoning\": \"checked {{output}}\"}",
        "mock/echo",
    )
    .await;
    create_prompt(&api, &token, "vibes", "looks fine", "mock/echo").await;
    create_prompt(
        &api,
        &token,
        "strict",
        "Grade {{output}} against {{rubric}}",
        "mock/echo",
    )
    .await;
    let judge =
        |name: &str| json!({"kind": "llm_judge", "name": name, "judge": {"folder": "eval", "name": name}});
    let (status, problem) = api
        .call(
            Method::POST,
            "/api/v1/evaluation-runs",
            t,
            Some(json!({"dataset_id": dataset, "dataset_version": 1, "targets": [{"prompt_id": v1}],
                "metrics": [judge("strict"), {"kind": "llm_judge", "name": "nobody", "judge": {"folder": "eval", "name": "missing"}}]})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let fields = problem_fields(&problem);
    assert!(
        fields.contains(&"metrics[1].judge_prompt".to_owned()),
        "{problem}"
    );
    assert_eq!(
        fields.iter().filter(|f| f.starts_with("cases[")).count(),
        10,
        "{problem}"
    );
    assert!(
        problem
            .to_string()
            .contains("missing rubric (needed by metrics[0])"),
        "{problem}"
    );
    let (status, run) = api
        .call(
            Method::POST,
            "/api/v1/evaluation-runs",
            t,
            Some(
                json!({"dataset_id": dataset, "dataset_version": 1, "targets": [{"prompt_id": v1}],
                "metrics": [judge("judge"), judge("vibes")], "name": "judged"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let judged_id = run["id"].as_str().unwrap().to_owned();
    assert!(
        run["metrics"][0]["judge"]["prompt_id"].is_string(),
        "resolved at start: {run}"
    );
    let (judged, _) = follow(&api, &token, &judged_id).await;
    assert_eq!(judged["status"], "completed", "{judged}");
    assert_eq!(aggregate(&judged, "judge")["mean"], 1.0);
    assert_eq!(aggregate(&judged, "vibes")["count"], 0);
    let listed = results(&api, &token, &judged_id).await;
    assert_eq!(listed[3]["scores"]["judge"], 1.0);
    assert_eq!(listed[3]["reasoning"]["judge"], "checked A: question 3");
    let (status, judge_run) = api
        .call(
            Method::GET,
            &format!(
                "/api/v1/runs/{}",
                listed[3]["metric_runs"]["judge"].as_str().unwrap()
            ),
            t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{judge_run}");
    assert!(listed[3]["scores"].get("vibes").is_none());
    assert_eq!(
        listed[3]["notes"][0],
        "vibes: the judge gave no score: \"looks fine\""
    );
}

#[tokio::test]
async fn a_run_survives_its_service_being_killed_and_scores_every_case_once() {
    let mut cluster = Cluster::start().await;
    let api = Api::new(cluster.http());
    let (token, _) = signup(&cluster.http(), "resume@acme.test").await;
    // mock/slow takes ~1.1 s a call: 24 cases at 3 at a time is ~9 s.
    let prompt = create_prompt(&api, &token, "slow", "Tell me about {{topic}}", "mock/slow").await;
    let dataset = create_dataset(&api, &token, "resumable").await;
    let csv: String = std::iter::once("id,topic\n".to_owned())
        .chain((0..24).map(|i| format!("c{i},topic {i}\n")))
        .collect();
    let (status, version) = upload(&api, &token, &dataset, "text/csv", &csv).await;
    assert_eq!(status, 201, "{version}");
    let (status, run) = api
        .call(
            Method::POST,
            "/api/v1/evaluation-runs",
            Some(&token),
            Some(json!({"dataset_id": dataset, "targets": [{"prompt_id": prompt}],
                "metrics": [{"kind": "length", "min": 1}], "concurrency": 3})),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();

    // Kill the evaluation service once a few cases are scored.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, now) = api
            .call(
                Method::GET,
                &format!("/api/v1/evaluation-runs/{run_id}"),
                Some(&token),
                None,
            )
            .await;
        if now["done"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.process("evaluation").kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.process("evaluation").start();
    cluster.wait_ready("evaluation").await;

    let (finished, _) = follow(&api, &token, &run_id).await;
    assert_eq!(
        (finished["status"].as_str(), finished["done"].as_u64()),
        (Some("completed"), Some(24)),
        "{finished}"
    );
    assert_eq!(finished["failed"], 0, "{finished}");
    let listed = results(&api, &token, &run_id).await;
    let ids: HashSet<&str> = listed.iter().map(|r| r["case_id"].as_str().unwrap()).collect();
    assert_eq!((listed.len(), ids.len()), (24, 24), "every case exactly once");
    assert!(
        listed.iter().all(|r| r["scores"]["length"] == 1.0),
        "every case scored"
    );
    // No case ran twice: executions that finished while the service was
    // down were found by their run ids, not run again — exactly 24 runs,
    // all completed, acted for the run's starter.
    let mut runs = Value::Null;
    for _ in 0..50 {
        let (status, body) = api
            .call(
                Method::GET,
                &format!("/api/v1/runs?prompt_id={prompt}&page_size=200"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let ended = body["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] != "running");
        runs = body;
        if ended && runs["runs"].as_array().unwrap().len() >= 24 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["completed"; 24], "{runs}");
    let run_ids: HashSet<&str> = listed.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(run_ids.len(), 24);
    assert!(
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"]["kind"] == "user"),
        "{runs}"
    );
}

#[tokio::test]
async fn dataset_uploads_have_their_own_size_limit() {
    let all = AllInOne::start_with(&[("PROMPTOPS_MAX_UPLOAD_BYTES", "2048")]).await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "limits@acme.test").await;
    let dataset = create_dataset(&api, &token, "sized").await;
    let row = |i: usize| format!("c{i},{}\n", "x".repeat(40));
    let small: String = std::iter::once("id,q\n".to_owned())
        .chain((0..30).map(row))
        .collect();
    let large: String = std::iter::once("id,q\n".to_owned())
        .chain((0..80).map(row))
        .collect();
    assert!(small.len() < 2048 && large.len() > 2048);
    let (status, version) = upload(&api, &token, &dataset, "text/csv", &small).await;
    assert_eq!(status, 201, "{version}");
    let (status, problem) = upload(&api, &token, &dataset, "text/csv", &large).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["status"], 413);
}

#[tokio::test]
async fn a_revoked_key_stops_the_executions_of_its_runs() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "revoke@acme.test").await;
    let (status, key) = api
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(&token),
            Some(json!({"name": "ci", "role": "editor"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["secret"].as_str().unwrap().to_owned();
    let prompt = create_prompt(&api, &secret, "slowly", "About {{topic}}", "mock/slow").await;
    let dataset = create_dataset(&api, &secret, "revocable").await;
    let csv: String = std::iter::once("id,topic\n".to_owned())
        .chain((0..8).map(|i| format!("c{i},t{i}\n")))
        .collect();
    let (status, _) = upload(&api, &secret, &dataset, "text/csv", &csv).await;
    assert_eq!(status, 201);
    let (status, run) = api
        .call(
            Method::POST,
            "/api/v1/evaluation-runs",
            Some(&secret),
            Some(json!({"dataset_id": dataset, "targets": [{"prompt_id": prompt}],
                "metrics": [{"kind": "length", "min": 1}], "concurrency": 1})),
        )
        .await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    // Revoke the key once the first case is scored: the run's remaining
    // executions, made for that key, are refused.
    loop {
        let (_, now) = api
            .call(
                Method::GET,
                &format!("/api/v1/evaluation-runs/{run_id}"),
                Some(&token),
                None,
            )
            .await;
        if now["done"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{}", key["key_id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (finished, _) = follow(&api, &token, &run_id).await;
    assert_eq!(finished["status"], "completed", "{finished}");
    let listed = results(&api, &token, &run_id).await;
    let refused = listed
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Unauthenticated")
        })
        .count();
    assert!(
        listed[0]["error"].as_str().unwrap_or_default().is_empty(),
        "{}",
        listed[0]
    );
    assert!(refused >= 5, "{refused} of 8 refused: {listed:?}");
}

#[tokio::test]
async fn the_cli_runs_an_evaluation_and_gates_on_regressions() {
    let all = AllInOne::start().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "ci-gate@acme.test").await;
    let (status, key) = api
        .call(
            Method::POST,
            "/api/v1/api-keys",
            Some(&token),
            Some(json!({"name": "ci", "role": "editor"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let secret = key["secret"].as_str().unwrap().to_owned();
    let prompt = create_prompt(&api, &token, "gated", "Q: {{question}}", "mock/echo").await;
    let dataset = create_dataset(&api, &token, "gate").await;
    let csv = "id,question,expected\na,one,Q: one\nb,two,Q: two\n";
    let (status, _) = upload(&api, &token, &dataset, "text/csv", csv).await;
    assert_eq!(status, 201);

    let cli = |args: Vec<String>| {
        let binary = promptops_testkit::workspace_binary("promptops").unwrap();
        let url = all.http();
        let secret = secret.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(binary)
                    .args(["eval", "run"])
                    .args(args)
                    .env("PROMPTOPS_URL", url)
                    .env("PROMPTOPS_API_KEY", secret)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let spec = all.dir.path().join("spec.json");
    let write_spec = |version: u64| {
        let body = json!({"dataset_id": dataset, "targets": [{"prompt_id": prompt, "version": version}],
            "metrics": [{"kind": "exact_match"}], "name": format!("v{version}")});
        std::fs::write(&spec, body.to_string()).unwrap();
    };
    write_spec(1);
    let out = cli(vec!["--spec".into(), spec.display().to_string()]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let baseline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (baseline["status"].as_str(), baseline["done"].as_u64()),
        (Some("completed"), Some(2))
    );
    let base_id = baseline["id"].as_str().unwrap().to_owned();

    // Version 2 answers differently: gated on exact_match, the CLI fails
    // with 3 and names the regressed cases.
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/api/v1/prompts/{prompt}/versions"),
            Some(&token),
            Some(json!({"template": "A: {{question}}", "model": {"model": "mock/echo"}})),
        )
        .await;
    assert_eq!(status, 201);
    write_spec(2);
    let gate = |metric: &str| {
        vec![
            "--spec".to_owned(),
            spec.display().to_string(),
            "--against".to_owned(),
            base_id.clone(),
            "--gate-metric".to_owned(),
            metric.to_owned(),
        ]
    };
    let out = cli(gate("exact_match")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("regressed a") && stderr.contains("regressed b"),
        "{stderr}"
    );

    // A spec the platform refuses: 65, with the field named.
    std::fs::write(
        &spec,
        json!({"dataset_id": dataset, "targets": [], "metrics": []}).to_string(),
    )
    .unwrap();
    let out = cli(vec!["--spec".into(), spec.display().to_string()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("targets"), "{stderr}");
}
