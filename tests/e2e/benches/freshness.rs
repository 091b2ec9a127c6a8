//! Freshness of the audit trail and analytics under load: the all-in-one
//! (release binaries, embedded log and SQLite) takes 500 runs/s for
//! `FRESHNESS_SECS` (10) seconds — 1,000 execution events/s, each run's
//! start and end — and the projections' own lag histogram
//! (`projection_lag_seconds`: the event's `occurred_at` → its rows
//! committed) is read from `/metrics`. Then one more run is made and the
//! time until its audit entry and its analytics count are visible through
//! the API is measured.
//!
//!     cargo build --release --workspace --bins
//!     cargo bench -p promptops-e2e --bench freshness

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::time::{Duration, Instant};

use promptops_e2e::{AllInOne, Api};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const RATE: u64 = 500;

/// `(le, cumulative count)` of one series of `projection_lag_seconds`.
fn lag_buckets(metrics: &str, projection: &str) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    for line in metrics.lines() {
        if !line.starts_with("projection_lag_seconds_bucket")
            || !line.contains(&format!("projection=\"{projection}\""))
            || !line.contains("stream=\"EVT_EXECUTION\"")
        {
            continue;
        }
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("");
        let value: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        out.push((le, value));
    }
    out
}

fn report(name: &str, buckets: &[(f64, u64)]) {
    let total = buckets.iter().map(|(_, n)| *n).max().unwrap_or(0);
    let within = |limit: f64| {
        buckets
            .iter()
            .filter(|(le, _)| *le <= limit)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    };
    let share = |limit: f64| 100.0 * within(limit) as f64 / total.max(1) as f64;
    let p99 = buckets
        .iter()
        .find(|(_, n)| *n as f64 >= 0.99 * total as f64)
        .map_or(f64::NAN, |(le, _)| *le);
    println!(
        "{name}: {total} events; within 100 ms {:.1}%, 250 ms {:.1}%, 500 ms {:.1}%, 1 s {:.2}%; p99 ≤ {p99} s",
        share(0.1),
        share(0.25),
        share(0.5),
        share(1.0)
    );
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("FRESHNESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let platform = AllInOne::start_for_benchmarks().await;
    let api = Api::new(platform.http());
    let owner = api.signup("fresh@bench.test").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let body = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hello"}]});
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/executions", platform.http());
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        ticker.tick().await;
        let (client, url, token, body) = (client.clone(), url.clone(), token.clone(), body.clone());
        tasks.spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        });
        sent += 1;
    }
    let mut ok = 0u64;
    while let Some(done) = tasks.join_next().await {
        ok += u64::from(done.unwrap_or(false));
    }
    println!(
        "load: {sent} runs sent at {RATE}/s over {:.1} s ({} execution events), {ok} succeeded",
        started.elapsed().as_secs_f64(),
        2 * ok
    );
    // One run more: how long until the API shows it.
    let (_, answer) = api
        .call(
            Method::POST,
            "/api/v1/executions",
            Some(&token),
            Some(body.clone()),
        )
        .await;
    let run_id = answer["run"]["id"].as_str().unwrap().to_owned();
    let t0 = Instant::now();
    let mut audit_at = None;
    let mut analytics_at = None;
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let range = format!(
        "from={}&to={}",
        fmt(now - time::Duration::hours(1)),
        fmt(now + time::Duration::hours(1))
    );
    while (audit_at.is_none() || analytics_at.is_none()) && t0.elapsed() < Duration::from_secs(30) {
        if audit_at.is_none() {
            let (_, page) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/audit/entries?resource_id={run_id}"),
                    Some(&token),
                    None,
                )
                .await;
            if page["entries"].as_array().is_some_and(|e| !e.is_empty()) {
                audit_at = Some(t0.elapsed());
            }
        }
        if analytics_at.is_none() {
            let (_, kpis): (_, Value) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/analytics/kpis?{range}"),
                    Some(&token),
                    None,
                )
                .await;
            if kpis["runs"].as_u64() == Some(ok + 1) {
                analytics_at = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "after the load, one run's audit entry visible after {audit_at:?}, its analytics after {analytics_at:?}"
    );
    let metrics = client
        .get(format!("{}/metrics", platform.grpc_url("audit")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    report(
        "audit_trail lag (EVT_EXECUTION)",
        &lag_buckets(&metrics, "audit_trail"),
    );
    report(
        "analytics lag (EVT_EXECUTION)",
        &lag_buckets(&metrics, "analytics"),
    );
}
