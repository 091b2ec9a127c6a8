//! An evaluation run end to end: a 1,000-case dataset run on `mock/echo`
//! (0 ms latency) through `promptops serve` (embedded default), scored with
//! BLEU, ROUGE-L and an assertion, from start request to `completed`.
//!
//!     cargo build --release --workspace --bins
//!     cargo bench -p promptops-e2e --bench evaluation_run
//!
//! `EVAL_CASES` (default 1000), `EVAL_CONCURRENCY` (default 16) and
//! `EVAL_ROUNDS` (default 3; a new run of the same dataset each round).
//! Target: 1,000 cases in < 10 s.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::time::{Duration, Instant};

use promptops_e2e::{AllInOne, Api, signup};
use reqwest::Method;
use serde_json::json;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let cases = env_number("EVAL_CASES", 1000);
    let concurrency = env_number("EVAL_CONCURRENCY", 16);
    let rounds = env_number("EVAL_ROUNDS", 3).max(1);
    let all = AllInOne::start_for_benchmarks().await;
    let api = Api::new(all.http());
    let (token, _) = signup(&all.http(), "bench@evals.test").await;
    let t = Some(token.as_str());
    let (status, prompt) = api
        .call(
            Method::POST,
            "/api/v1/prompts",
            t,
            Some(json!({"name": "bench", "template": "Answer briefly: {{question}}", "model": {"model": "mock/echo"}})),
        )
        .await;
    assert_eq!(status, 201, "{prompt}");
    let prompt_id = prompt["prompt"]["id"].as_str().unwrap().to_owned();
    let (status, dataset) = api
        .call(
            Method::POST,
            "/api/v1/datasets",
            t,
            Some(json!({"name": "bench"})),
        )
        .await;
    assert_eq!(status, 201, "{dataset}");
    let dataset_id = dataset["id"].as_str().unwrap().to_owned();
    let jsonl: String = (0..cases)
        .map(|i| {
            let question = format!("what is the capital of country number {i} in the list?");
            let expected = format!("Answer briefly: what is the capital of country {i}?");
            format!(
                "{}\n",
                json!({"id": format!("c{i}"), "variables": {"question": question}, "expected": expected})
            )
        })
        .collect();
    let upload = api
        .http
        .post(format!("{}/api/v1/datasets/{dataset_id}/versions", api.base))
        .bearer_auth(&token)
        .header("content-type", "application/jsonl")
        .body(jsonl)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);

    let mut times = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        let (status, run) = api
            .call(
                Method::POST,
                "/api/v1/evaluation-runs",
                t,
                Some(json!({"dataset_id": dataset_id, "targets": [{"prompt_id": prompt_id}],
                    "metrics": [{"kind": "bleu"}, {"kind": "rougeL"}, {"kind": "contains", "values": ["capital"]}],
                    "concurrency": concurrency})),
            )
            .await;
        assert_eq!(status, 201, "{run}");
        let run_id = run["id"].as_str().unwrap().to_owned();
        loop {
            let (_, now) = api
                .call(Method::GET, &format!("/api/v1/evaluation-runs/{run_id}"), t, None)
                .await;
            if now["status"] != "running" {
                assert_eq!(
                    (now["status"].as_str(), now["failed"].as_u64()),
                    (Some("completed"), Some(0)),
                    "{now}"
                );
                assert_eq!(now["done"].as_u64(), Some(cases));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        println!(
            "round {round}: {cases} cases in {:.2} s ({:.0} cases/s, concurrency {concurrency})",
            elapsed.as_secs_f64(),
            cases as f64 / elapsed.as_secs_f64()
        );
        times.push(elapsed);
    }
    times.sort();
    println!(
        "median {:.2} s over {rounds} rounds",
        times[times.len() / 2].as_secs_f64()
    );
}
