//! The platform's overhead on the hot path: open-loop load at a fixed rate
//! against the standalone mock provider directly, then through the gateway
//! (`promptops serve`, embedded default: every run's start and end durably
//! appended to the event log before the answer), then — when it is
//! installed — through LiteLLM's proxy against the same mock. The floor is
//! a bare forwarding proxy (`forwarding-proxy`: the gateway's crates, no
//! logic) in front of the same mock: what the extra HTTP hop alone costs on
//! this machine, whoever makes it.
//!
//!     cargo build --release --workspace --bins
//!     scripts/litellm-venv.sh             # optional: LiteLLM in target/litellm-env
//!     cargo bench -p promptops-e2e --bench overhead
//!
//! (`OVERHEAD_LITELLM=0` leaves LiteLLM out, `OVERHEAD_FLOOR=0` the floor.)
//!
//! Each level sends `OVERHEAD_SECS` (default 10) seconds of requests at 100,
//! 500, 2,000 and 5,000 requests/s (`OVERHEAD_RATES=500,2000`), each request
//! started on schedule whether or not earlier ones have answered (open loop;
//! at most `MAX_IN_FLIGHT` at once, the rest counted as dropped). Latency is
//! from sending to the whole answer (non-streaming) or to the first content
//! chunk (streaming: time to first token). Overhead = the gateway's (or
//! LiteLLM's) latency − the mock's own, at the same rate and percentile.
//! The gateway's resident memory is sampled every 100 ms under load.
//!
//! The load generator runs in this process on the same two cores, one
//! thread; it costs the same for every target.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use promptops_e2e::{AllInOne, Api, ServiceProcess, forwarding_proxy, mock_provider, signup};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinSet;

const MAX_IN_FLIGHT: usize = 2_000;
const LITELLM_KEY: &str = "sk-promptops-bench-0123456789abcdef0123456789abcdef";

/// Where requests go and how.
#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    model: String,
    bearer: Option<String>,
    /// Its process, for memory samples.
    pid: Option<u32>,
}

#[derive(Debug, Default)]
struct Outcome {
    latency: Option<Histogram<u64>>,
    sent: u64,
    ok: u64,
    errors: u64,
    dropped: u64,
    achieved_rps: f64,
    max_rss_mb: f64,
    /// The target process's CPU time (user + system) per request sent.
    cpu_us_per_request: Option<f64>,
}

impl Outcome {
    fn at(&self, q: f64) -> f64 {
        self.latency
            .as_ref()
            .map_or(f64::NAN, |h| h.value_at_quantile(q) as f64)
    }
}

/// A process's CPU time so far (user + system), in µs.
fn cpu_us(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks * 10_000.0)
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Sends one request; returns the latency in µs (to the end, or to the
/// first content chunk when streaming).
async fn one(client: &reqwest::Client, target: &Target, streaming: bool) -> Result<u64, String> {
    let body = json!({"model": target.model, "stream": streaming,
        "messages": [{"role": "user", "content": "Hello there, how are you today?"}]});
    let mut request = client.post(&target.url).json(&body);
    if let Some(bearer) = &target.bearer {
        request = request.bearer_auth(bearer);
    }
    let started = Instant::now();
    let mut response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        return Err(format!(
            "{status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    if !streaming {
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if value["choices"][0]["message"]["content"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            return Err(format!("no content: {value}"));
        }
        return Ok(elapsed.as_micros() as u64);
    }
    // Each complete line is parsed once, until the first content chunk;
    // the rest of the body is only read (the load generator shares the
    // cores with the servers, so it does no more work than it must).
    let mut seen = String::new();
    let mut parsed = 0;
    let mut first = None;
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if first.is_some() {
            continue;
        }
        seen.push_str(&String::from_utf8_lossy(&chunk));
        let complete = seen.rfind('\n').map_or(0, |end| end + 1);
        if has_content(&seen[parsed..complete]) {
            first = Some(started.elapsed());
        }
        parsed = complete;
    }
    first.map(|d| d.as_micros() as u64).ok_or_else(|| {
        format!(
            "no content chunk in {}",
            seen.chars().take(300).collect::<String>()
        )
    })
}

/// Complete SSE lines with a chunk of non-empty `delta.content`.
fn has_content(lines: &str) -> bool {
    lines
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .any(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        })
}

/// `rate` requests/s for `seconds`, open loop.
async fn drive(
    client: &reqwest::Client,
    target: &Target,
    streaming: bool,
    rate: u64,
    seconds: u64,
) -> Outcome {
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let histogram = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut tasks = JoinSet::new();
    if let Some(pid) = target.pid {
        let max_rss = max_rss.clone();
        let sampling = sampling.clone();
        tasks.spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(mb) = rss_mb(pid) {
                    max_rss.fetch_max((mb * 10.0) as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let mut dropped = 0;
    let cpu_before = target.pid.and_then(cpu_us);
    let start = Instant::now();
    for i in 0..total {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            dropped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (client, target) = (client.clone(), target.clone());
        let (in_flight, errors, histogram, first_error) = (
            in_flight.clone(),
            errors.clone(),
            histogram.clone(),
            first_error.clone(),
        );
        tasks.spawn(async move {
            match tokio::time::timeout(Duration::from_secs(30), one(&client, &target, streaming)).await {
                Ok(Ok(us)) => {
                    let _ = histogram.lock().unwrap().record(us.max(1));
                }
                Ok(Err(e)) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .unwrap()
                        .get_or_insert("no answer within 30 s".into());
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let sending = start.elapsed();
    sampling.store(false, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let cpu_after = target.pid.and_then(cpu_us);
    if let Some(e) = first_error.lock().unwrap().take() {
        println!("    first error ({}): {e}", target.name);
    }
    let histogram = std::mem::replace(&mut *histogram.lock().unwrap(), Histogram::new(3).unwrap());
    Outcome {
        ok: histogram.len(),
        latency: Some(histogram),
        sent: total - dropped,
        errors: errors.load(Ordering::Relaxed),
        dropped,
        achieved_rps: (total - dropped) as f64 / sending.as_secs_f64(),
        max_rss_mb: max_rss.load(Ordering::Relaxed) as f64 / 10.0,
        cpu_us_per_request: cpu_before
            .zip(cpu_after)
            .map(|(before, after)| (after - before) / (total - dropped).max(1) as f64),
    }
}

fn report(target: &str, mode: &str, rate: u64, o: &Outcome, baseline: Option<&Outcome>) {
    let overhead = baseline.map_or(String::new(), |b| {
        format!(
            "  overhead p50={:+.0}µs p99={:+.0}µs",
            o.at(0.5) - b.at(0.5),
            o.at(0.99) - b.at(0.99)
        )
    });
    let rss = if o.max_rss_mb > 0.0 {
        format!("  rss≤{:.0}MB", o.max_rss_mb)
    } else {
        String::new()
    };
    let cpu = o
        .cpu_us_per_request
        .map_or(String::new(), |us| format!("  cpu={us:.0}µs/req"));
    println!(
        "{target:<9} {mode:<6} {rate:>5}/s  sent={:<6} ok={:<6} err={:<5} dropped={:<5} ({:.0}/s)  p50={:.0}µs p99={:.0}µs max={:.0}µs{overhead}{rss}{cpu}",
        o.sent,
        o.ok,
        o.errors,
        o.dropped,
        o.achieved_rps,
        o.at(0.5),
        o.at(0.99),
        o.latency.as_ref().map_or(f64::NAN, |h| h.max() as f64),
    );
}

/// LiteLLM's proxy on `port`, routing `local-echo` to the mock, if the venv
/// made by `scripts/litellm-venv.sh` is there.
async fn start_litellm(dir: &std::path::Path, mock_url: &str) -> Option<(ServiceProcess, Target)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = root.join("target/litellm-env/bin/litellm");
    if std::env::var("OVERHEAD_LITELLM").is_ok_and(|v| v == "0") {
        println!("LiteLLM: OVERHEAD_LITELLM=0; skipped");
        return None;
    }
    if !binary.exists() {
        println!("LiteLLM: not installed (scripts/litellm-venv.sh); skipped");
        return None;
    }
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: local-echo\n    litellm_params:\n      model: openai/echo\n      api_base: {mock_url}/v1\n      api_key: sk-none\nlitellm_settings:\n  telemetry: false\n  drop_params: true\n"
        ),
    )
    .unwrap();
    let port = promptops_testkit::free_port().unwrap();
    let process = ServiceProcess::spawn(
        "litellm",
        binary,
        vec![
            "--config".into(),
            config.display().to_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--num_workers".into(),
            "1".into(),
        ],
        vec![
            ("LITELLM_MASTER_KEY".into(), LITELLM_KEY.into()),
            ("LITELLM_LOG".into(), "ERROR".into()),
            ("LITELLM_LOCAL_MODEL_COST_MAP".into(), "True".into()),
            ("HOME".into(), dir.display().to_string()),
        ],
        dir.join("litellm.log"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let target = Target {
        name: "litellm",
        url: format!("{url}/v1/chat/completions"),
        model: "local-echo".into(),
        bearer: Some(LITELLM_KEY.into()),
        pid: process.pid(),
    };
    for _ in 0..240 {
        if one(&client, &target, false).await.is_ok() {
            return Some((process, target));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("LiteLLM did not start:\n{}", process.log());
    None
}

/// The mock's echo model, answering after 5 ms.
const SLOW_UPSTREAM: &str = "echo;latency_ms=5";

/// Where an idle request's time goes: medians of sequential requests (one
/// at a time, so no queueing) to the mock, to the gateway's model list (auth
/// and the hop to execution, no run), and runs on the in-process mock
/// (`mock/echo`: recorded, no provider call) and on the mock server; then
/// the same run with the mock taking 5 ms to answer, as a real model does
/// (a run's two appends are then more than 1 ms apart, each on an idle log).
async fn probe(client: &reqwest::Client, direct: &Target, gateway: &Target) {
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut timings = Vec::new();
    for (name, base, model) in [
        ("mock server direct", direct, "echo"),
        ("gateway run mock/echo", gateway, "mock/echo"),
        ("gateway run local/echo", gateway, "local/echo"),
        ("mock server direct, 5 ms", direct, SLOW_UPSTREAM),
        ("gateway run local/echo-5ms", gateway, "local/echo-5ms"),
    ] {
        let target = Target {
            model: model.into(),
            ..base.clone()
        };
        let mut latencies = Vec::new();
        for _ in 0..300 {
            latencies.push(one(client, &target, false).await.unwrap());
        }
        timings.push(format!("{name} {}µs", median(latencies)));
    }
    let models = gateway.url.replace("/chat/completions", "/models");
    let mut latencies = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        let response = client
            .get(&models)
            .bearer_auth(gateway.bearer.as_deref().unwrap_or_default())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        latencies.push(started.elapsed().as_micros() as u64);
    }
    timings.push(format!("gateway GET /v1/models {}µs", median(latencies)));
    println!("sequential medians: {}", timings.join(", "));
    // The service's own view of the same runs: mean append and run time.
    let metrics = gateway.url.replace("/v1/chat/completions", "/metrics");
    let text = client.get(&metrics).send().await.unwrap().text().await.unwrap();
    // A histogram's mean over the series whose labels start with `labels`
    // (all of them for ""; one line per model, say).
    let mean = |name: &str, labels: &str| {
        let total = |suffix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}_{suffix}{labels}")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let (sum, count) = (total("sum"), total("count"));
        if count > 0.0 { sum / count * 1e6 } else { f64::NAN }
    };
    println!(
        "service means: append {:.0}µs, run (provider call and its handling) {:.0}µs",
        mean("eventlog_append_seconds", ""),
        mean("promptops_run_duration_seconds", "")
    );
    // Each server's own time per route (the gateway's HTTP, execution's gRPC).
    const REQUESTS: &str = "promptops_request_duration_seconds";
    let mut routes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(REQUESTS)?.strip_prefix("_count"))
        .filter_map(|l| l.rsplit_once(' ').map(|(labels, _)| labels))
        .filter(|l| l.contains("chat/completions") || l.contains("ExecutionService/Execute"))
        .collect();
    routes.sort_unstable();
    for labels in routes {
        println!("  server mean {labels}: {:.0}µs", mean(REQUESTS, labels));
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let seconds: u64 = std::env::var("OVERHEAD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let rates: Vec<u64> = std::env::var("OVERHEAD_RATES")
            .unwrap_or_else(|_| "100,500,2000,5000".into())
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect();
        let all = AllInOne::start_for_benchmarks().await;
        let (_mock, mock_url) = mock_provider(all.dir.path()).await;
        let api = Api::new(all.http());
        let (token, _) = signup(&all.http(), "bench@overhead.test").await;
        let (status, key) = api
            .call(
                Method::POST,
                "/api/v1/api-keys",
                Some(&token),
                Some(json!({"name": "load", "role": "owner"})),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        let key = key["secret"].as_str().unwrap().to_owned();
        let (status, provider) = api
            .call(
                Method::PUT,
                "/api/v1/providers/local",
                Some(&key),
                Some(json!({"kind": "openai_compatible", "base_url": format!("{mock_url}/v1"),
                    "limits": {"max_concurrent_calls": 10_000}})),
            )
            .await;
        assert_eq!(status, 200, "{provider}");
        for (id, upstream) in [("local/echo", "echo"), ("local/echo-5ms", SLOW_UPSTREAM)] {
            let (status, model) = api
                .call(
                    Method::POST,
                    "/api/v1/models",
                    Some(&key),
                    Some(json!({"id": id, "upstream_model": upstream, "context_window": 8000,
                        "max_output_tokens": 1000, "input_price_per_mtok_usd": "0.15",
                        "output_price_per_mtok_usd": "0.60"})),
                )
                .await;
            assert_eq!(status, 200, "{model}");
        }

        let direct = Target {
            name: "mock",
            url: format!("{mock_url}/v1/chat/completions"),
            model: "echo".into(),
            bearer: None,
            pid: None,
        };
        let gateway = Target {
            name: "promptops",
            url: format!("{}/v1/chat/completions", all.http()),
            model: "local/echo".into(),
            bearer: Some(key),
            pid: all.process.pid(),
        };
        let floor = if std::env::var("OVERHEAD_FLOOR").is_ok_and(|v| v == "0") {
            println!("floor: OVERHEAD_FLOOR=0; skipped");
            None
        } else {
            let (process, url) = forwarding_proxy(all.dir.path(), &mock_url).await;
            let target = Target {
                name: "floor",
                url: format!("{url}/v1/chat/completions"),
                model: "echo".into(),
                bearer: None,
                pid: process.pid(),
            };
            Some((process, target))
        };
        let litellm = start_litellm(all.dir.path(), &mock_url).await;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(MAX_IN_FLIGHT)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        println!(
            "{seconds} s per level; rates {rates:?}; latency to the whole answer (json) or the first token (sse)"
        );
        probe(&client, &direct, &gateway).await;
        // The floor right after the mock, before the gateway's level can
        // leave work behind (projections catching up) on the same cores.
        let mut targets = vec![&direct];
        targets.extend(floor.as_ref().map(|(_, target)| target));
        targets.push(&gateway);
        targets.extend(litellm.as_ref().map(|(_, target)| target));
        for target in &targets {
            // Warm up: connections, caches, the tokenizer.
            drive(&client, target, false, 200, 2).await;
        }
        for streaming in [false, true] {
            let mode = if streaming { "sse" } else { "json" };
            for &rate in &rates {
                let baseline = drive(&client, &direct, streaming, rate, seconds).await;
                report(direct.name, mode, rate, &baseline, None);
                for target in targets.iter().skip(1) {
                    let outcome = drive(&client, target, streaming, rate, seconds).await;
                    report(target.name, mode, rate, &outcome, Some(&baseline));
                }
            }
        }
        println!(
            "promptops rss at the end: {:.0} MB",
            all.process.pid().and_then(rss_mb).unwrap_or(f64::NAN)
        );
    });
}
