//! Resolving a prompt over gRPC on loopback, end to end: `promptops serve`
//! (release build, embedded default) in its own process, a tonic client
//! here, bearer-token authentication on every call.
//!
//!     cargo build --release --workspace --bins
//!     cargo bench --workspace --bench resolve
//!
//! 20,000 sequential `ResolvePrompt` calls by label after 2,000 warm-up, each
//! timed on its own; then the same through the gateway's HTTP endpoint with
//! `If-None-Match` (304s).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::time::Instant;

use hdrhistogram::Histogram;
use promptops_e2e::{AllInOne, channel, signup, text_version, with_token};
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use promptops_proto::prompts::v1::{CreatePromptRequest, MoveLabelRequest, PromptRef, ResolvePromptRequest};

fn report(name: &str, histogram: &Histogram<u64>) {
    let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<44} p50={:.0}µs p95={:.0}µs p99={:.0}µs max={:.0}µs",
        at(0.5),
        at(0.95),
        at(0.99),
        histogram.max() as f64 / 1000.0
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let all = AllInOne::start_for_benchmarks().await;
        let (token, _) = signup(&all.http(), "bench@resolve.test").await;
        let mut prompts = PromptServiceClient::new(channel(&all.grpc_url("prompts")).await);
        let created = prompts
            .create_prompt(with_token(
                &token,
                CreatePromptRequest {
                    name: "greeting".into(),
                    folder: "support".into(),
                    version: text_version(&"Hello {{name}}. ".repeat(40)),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let id = created.prompt.unwrap().prompt_id;
        prompts
            .move_label(with_token(
                &token,
                MoveLabelRequest {
                    prompt_id: id.clone(),
                    label: "production".into(),
                    version: 1,
                    reason: String::new(),
                },
            ))
            .await
            .unwrap();
        let request = ResolvePromptRequest {
            prompt: Some(PromptRef {
                prompt_id: String::new(),
                folder: "support".into(),
                name: "greeting".into(),
            }),
            label: "production".into(),
            ..Default::default()
        };
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        for round in 0..22_000 {
            let started = Instant::now();
            let resolved = prompts
                .resolve_prompt(with_token(&token, request.clone()))
                .await
                .unwrap()
                .into_inner();
            let nanos = started.elapsed().as_nanos() as u64;
            assert_eq!(resolved.version.map(|v| v.number), Some(1));
            if round >= 2_000 {
                histogram.record(nanos.max(1)).unwrap();
            }
        }
        report("gRPC ResolvePrompt by folder/name + label", &histogram);

        let http = reqwest::Client::new();
        let url = format!(
            "{}/api/v1/prompts/resolve?folder=support&name=greeting&label=production",
            all.http()
        );
        let first = http.get(&url).bearer_auth(&token).send().await.unwrap();
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        for round in 0..5_500 {
            let started = Instant::now();
            let response = http
                .get(&url)
                .bearer_auth(&token)
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            let nanos = started.elapsed().as_nanos() as u64;
            assert_eq!(response.status(), 304);
            if round >= 500 {
                histogram.record(nanos.max(1)).unwrap();
            }
        }
        report("HTTP resolve via gateway, If-None-Match → 304", &histogram);
    });
}
