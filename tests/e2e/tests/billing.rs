//! Billing end to end: on the all-in-one (embedded log, SQLite) the ledger
//! equals the runs' costs exactly across a price change and again after a
//! rebuild from zero, reconciliation (API and CLI), reports, alerts, bad
//! input and other orgs kept out; on JetStream + PostgreSQL with two
//! execution replicas behind two gateways, a hard budget stops a burst
//! within its bound with problem JSON naming it, a request quota answers
//! 429, and killing billing under load loses and doubles no line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::time::{Duration, Instant};

use promptops_e2e::{AllInOne, Api, Cluster, problem_fields};
use promptops_testkit::{free_port, workspace_binary};
use reqwest::Method;
use serde_json::{Value, json};

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn around_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "from={}&to={}",
        rfc3339(now - time::Duration::hours(1)),
        rfc3339(now + time::Duration::hours(1))
    )
}

async fn call_ok(api: &Api, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, body) = api.call(method.clone(), path, Some(token), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

/// `cost_usd` ("0.000011000") in nano-USD.
fn nano(usd: &Value) -> i64 {
    let (whole, fraction) = usd.as_str().unwrap().split_once('.').unwrap();
    whole.parse::<i64>().unwrap() * 1_000_000_000 + fraction.parse::<i64>().unwrap()
}

/// Runs `mock/echo` once; returns the run's cost.
async fn echo(api: &Api, token: &str, words: &str) -> i64 {
    let run = call_ok(
        api,
        Method::POST,
        "/api/v1/executions",
        token,
        Some(json!({"model": "mock/echo", "messages": [{"role": "user", "content": words}]})),
    )
    .await;
    assert_eq!(run["run"]["status"], "completed", "{run}");
    nano(&run["run"]["cost_usd"])
}

/// The org's ledger lines, waiting until there are `n`.
async fn ledger(api: &Api, token: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = call_ok(
            api,
            Method::GET,
            "/api/v1/billing/ledger?page_size=200",
            token,
            None,
        )
        .await;
        let lines = page["lines"].as_array().unwrap().clone();
        if lines.len() >= n || Instant::now() > deadline {
            assert_eq!(lines.len(), n, "{page}");
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cli(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(workspace_binary("promptops").unwrap())
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_ledger_is_exact_across_a_price_change_and_a_rebuild_and_bad_input_is_refused() {
    let mut platform = AllInOne::start_with(&[("PROMPTOPS_BILLING_ALERT_SECS", "1")]).await;
    let api = Api::new(platform.http());
    let owner = api.signup("owner@billing.test").await;
    let t = owner["access_token"].as_str().unwrap().to_owned();

    // The seeded price book, current.
    let book = call_ok(
        &api,
        Method::GET,
        "/api/v1/billing/prices?model=mock/echo",
        &t,
        None,
    )
    .await;
    assert_eq!(book["entries"][0]["source"], "seed", "{book}");
    assert_eq!(book["entries"][0]["current"], true);
    assert_eq!(book["entries"][0]["prices"]["input_per_mtok"], 500_000);
    let all = call_ok(&api, Method::GET, "/api/v1/billing/prices", &t, None).await;
    assert!(
        all["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["model"] == "openai/gpt-4o")
            && all["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["model"] == "anthropic/claude-sonnet-4-5"),
        "{all}"
    );

    // Five runs at the seed price, then a new price from 2 s on.
    let mut costs = Vec::new();
    for _ in 0..5 {
        costs.push(echo(&api, &t, "one two three four").await);
    }
    let from = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let new_price = json!({"input_per_mtok": 3_000_000, "output_per_mtok": 7_000_000, "cached_input_per_mtok": 1_000_000});
    let (status, scheduled) = api
        .call(
            Method::POST,
            "/api/v1/billing/prices",
            Some(&t),
            Some(json!({"model": "mock/echo", "effective_from": rfc3339(from), "prices": new_price})),
        )
        .await;
    assert_eq!(status, 201, "{scheduled}");
    assert_eq!(scheduled["source"], "org");
    // Bad prices: overlapping, negative, in the past, for no model.
    for (body, expected, fields) in [
        (
            json!({"model": "mock/echo", "effective_from": rfc3339(from), "prices": new_price}),
            409,
            vec![],
        ),
        (
            json!({"model": "mock/echo", "prices": {"input_per_mtok": -1}}),
            400,
            vec!["prices.input_per_mtok"],
        ),
        (
            json!({"model": "mock/echo", "effective_from": "2020-01-01T00:00:00Z", "prices": new_price}),
            400,
            vec!["effective_from"],
        ),
        (
            json!({"model": "nomodel", "prices": new_price}),
            400,
            vec!["model"],
        ),
    ] {
        let (status, problem) = api
            .call(Method::POST, "/api/v1/billing/prices", Some(&t), Some(body))
            .await;
        assert_eq!(status, expected, "{problem}");
        assert_eq!(problem_fields(&problem), fields, "{problem}");
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:promptops:problem:")
        );
    }
    let wait = (from - time::OffsetDateTime::now_utc())
        .whole_milliseconds()
        .max(0) as u64
        + 200;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    for _ in 0..5 {
        costs.push(echo(&api, &t, "one two three four").await);
    }
    // 10 input tokens (4 words and the message overhead) and 4 output:
    // 10 × 0.5 + 4 × 1.5 µUSD at the seed price, 10 × 3 + 4 × 7 at the new.
    assert_eq!(&costs[..5], [11_000; 5]);
    assert_eq!(&costs[5..], [58_000; 5]);
    let total: i64 = costs.iter().sum();
    // The model list shows the book's price in force.
    let models = call_ok(&api, Method::GET, "/api/v1/models", &t, None).await;
    let echo_model = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "mock/echo")
        .unwrap()
        .clone();
    assert_eq!(echo_model["input_price_per_mtok_usd"], "3.000000", "{echo_model}");

    let lines = ledger(&api, &t, 10).await;
    let ledger_total: i64 = lines.iter().map(|l| l["cost_nano_usd"].as_i64().unwrap()).sum();
    assert_eq!(ledger_total, total);
    let newest = &lines[0];
    assert_eq!(newest["prices"]["input_per_mtok"], 3_000_000, "{newest}");
    assert_eq!(newest["cost_usd"], "0.000058000");
    assert_eq!(newest["user_id"], owner["user_id"]);
    assert_eq!(lines[9]["prices"]["input_per_mtok"], 500_000);

    // Reconciled over the API …
    let reconciled = call_ok(
        &api,
        Method::GET,
        &format!("/api/v1/billing/reconcile?{}", around_now()),
        &t,
        None,
    )
    .await;
    assert_eq!(reconciled["reconciled"], true, "{reconciled}");
    assert_eq!(reconciled["terminal_runs"], 10);
    assert_eq!(reconciled["ledger_cost_nano_usd"], total);
    let (status, problem) = api
        .call(Method::GET, "/api/v1/billing/reconcile", Some(&t), None)
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem_fields(&problem), ["to", "from"]);
    // … and by the CLI, with an admin API key.
    let key = call_ok(
        &api,
        Method::POST,
        "/api/v1/api-keys",
        &t,
        Some(json!({"name": "cli", "role": "admin"})),
    )
    .await;
    let mut cli_env = vec![
        ("PROMPTOPS_URL".to_owned(), platform.http()),
        (
            "PROMPTOPS_API_KEY".to_owned(),
            key["secret"].as_str().unwrap().to_owned(),
        ),
    ];
    let out = cli(&cli_env, &["billing", "reconcile"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["reconciled"], true);
    assert_eq!(printed["terminal_runs"], 10);
    let out = cli(&cli_env, &["billing", "reconcile", "--from", "yesterday"]);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Reports: by model, as CSV, with a forecast; bad parameters named.
    let report = call_ok(
        &api,
        Method::GET,
        &format!("/api/v1/billing/usage?{}&group_by=model", around_now()),
        &t,
        None,
    )
    .await;
    assert_eq!(report["rows"][0]["key"], "mock/echo", "{report}");
    assert_eq!(report["rows"][0]["runs"], 10);
    assert_eq!(report["total"]["cost_nano_usd"], total);
    assert!(
        report["forecast"]["method"].as_str().unwrap().contains("day"),
        "{report}"
    );
    let csv = api
        .http
        .get(format!(
            "{}/api/v1/billing/usage?{}&group_by=day&format=csv",
            platform.http(),
            around_now()
        ))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let text = csv.text().await.unwrap();
    let mut rows = text.lines();
    assert_eq!(
        rows.next(),
        Some("day,runs,failed_runs,input_tokens,output_tokens,cached_input_tokens,cost_nano_usd,cost_usd")
    );
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with(&format!("total,10,0,100,40,0,{total},")),
        "{text}"
    );
    let (status, problem) = api
        .call(
            Method::GET,
            &format!(
                "/api/v1/billing/usage?{}&group_by=weekday&format=xml",
                around_now()
            ),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem_fields(&problem), ["group_by", "format"]);

    // Budgets and projects: unknown keys and projects, bad fields, all named.
    for (body, fields) in [
        (
            json!({"name": "k", "scope": "api_key", "target": "key_nope", "metric": "spend", "period": "month", "limit_usd": "1.00"}),
            vec!["target"],
        ),
        (
            json!({"name": "p", "scope": "project", "target": "nope", "metric": "requests", "period": "day", "limit": 5}),
            vec!["target"],
        ),
        (
            json!({"name": "n", "scope": "org", "metric": "spend", "period": "month", "limit": -5}),
            vec!["limit"],
        ),
        (
            json!({"name": "w", "scope": "team", "metric": "euros", "period": "week", "limit_usd": "x"}),
            vec!["scope", "metric", "period", "limit_usd"],
        ),
    ] {
        let (status, problem) = api
            .call(Method::PUT, "/api/v1/billing/budgets/b1", Some(&t), Some(body))
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem_fields(&problem), fields, "{problem}");
    }
    let (status, problem) = api
        .call(
            Method::PUT,
            "/api/v1/billing/projects/search",
            Some(&t),
            Some(json!({"api_keys": ["key_nope"]})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem_fields(&problem), ["api_keys"]);
    let key_id = key["key_id"].as_str().unwrap();
    let project = call_ok(
        &api,
        Method::PUT,
        "/api/v1/billing/projects/search",
        &t,
        Some(json!({"api_keys": [key_id]})),
    )
    .await;
    assert_eq!(project["api_keys"], json!([key_id]));

    // A soft budget of exactly what was spent: 50, 80 and 100 % alerts.
    let budget = call_ok(
        &api,
        Method::PUT,
        "/api/v1/billing/budgets/monthly",
        &t,
        Some(json!({"name": "Monthly", "scope": "org", "metric": "spend", "period": "month", "limit": total, "hard": false})),
    )
    .await;
    assert_eq!(budget["used"], total, "{budget}");
    assert_eq!(budget["thresholds"], json!([50, 80, 100]));
    let deadline = Instant::now() + Duration::from_secs(15);
    let alerts = loop {
        let alerts = call_ok(&api, Method::GET, "/api/v1/billing/alerts", &t, None).await;
        if alerts["alerts"].as_array().unwrap().len() >= 3 || Instant::now() > deadline {
            break alerts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut percents: Vec<u64> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["percent"].as_u64().unwrap())
        .collect();
    percents.sort_unstable();
    assert_eq!(percents, [50, 80, 100], "{alerts}");
    // The audit trail sees them, and the price and budget changes.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let entries = call_ok(
            &api,
            Method::GET,
            "/api/v1/audit/entries?action_prefix=budget.",
            &t,
            None,
        )
        .await;
        let actions: Vec<&str> = entries["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        let crossed = actions
            .iter()
            .filter(|a| **a == "budget.threshold.crossed")
            .count();
        if (crossed == 3 && actions.contains(&"budget.set")) || Instant::now() > deadline {
            assert_eq!(crossed, 3, "{entries}");
            assert!(actions.contains(&"budget.set"), "{entries}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entries = call_ok(
        &api,
        Method::GET,
        "/api/v1/audit/entries?action_prefix=price.",
        &t,
        None,
    )
    .await;
    assert_eq!(entries["entries"][0]["action"], "price.scheduled", "{entries}");
    assert!(
        entries["entries"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("input $3.000000"),
        "{entries}"
    );

    // Another org sees none of it.
    let other = api.signup("other@billing.test").await;
    let o = other["access_token"].as_str().unwrap();
    let page = call_ok(&api, Method::GET, "/api/v1/billing/ledger", o, None).await;
    assert_eq!(page["lines"], json!([]));
    let theirs = call_ok(
        &api,
        Method::GET,
        &format!("/api/v1/billing/reconcile?{}", around_now()),
        o,
        None,
    )
    .await;
    assert_eq!(theirs["terminal_runs"], 0);
    let budgets = call_ok(&api, Method::GET, "/api/v1/billing/budgets", o, None).await;
    assert_eq!(budgets["budgets"], json!([]));
    let alerts = call_ok(&api, Method::GET, "/api/v1/billing/alerts", o, None).await;
    assert_eq!(alerts["alerts"], json!([]));
    let (status, _) = api
        .call(
            Method::PUT,
            "/api/v1/billing/projects/mine",
            Some(o),
            Some(json!({"api_keys": [key_id]})),
        )
        .await;
    assert_eq!(status, 400, "another org's key is unknown here");

    // Rebuilt from zero (the platform stopped): the same ledger.
    platform.process.terminate(Duration::from_secs(10));
    let out = cli(
        platform.process.env(),
        &["projections", "rebuild", "usage_ledger"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    platform.process.start();
    assert!(
        promptops_e2e::wait_http_ok(&format!("{}/readyz", platform.http()), Duration::from_secs(30)).await
    );
    let lines = ledger(&api, &t, 10).await;
    assert_eq!(
        lines
            .iter()
            .map(|l| l["cost_nano_usd"].as_i64().unwrap())
            .sum::<i64>(),
        total
    );
    cli_env[0].1 = platform.http();
    let out = cli(&cli_env, &["billing", "reconcile"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A run of `mock/lorem` (100 tokens, ~110 ms) through `base`.
async fn lorem(client: &reqwest::Client, base: &str, secret: &str) -> (u16, Value) {
    let response = client
        .post(format!("{base}/api/v1/executions"))
        .bearer_auth(secret)
        .json(&json!({"model": "mock/lorem", "messages": [{"role": "user", "content": "go"}], "parameters": {"max_tokens": 100}}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn budgets_hold_across_two_execution_replicas_and_a_killed_billing_loses_no_line() {
    let cluster = Cluster::start().await;
    // A second execution replica, and a second gateway in front of it.
    let exec2 = free_port().unwrap();
    let (gw2_http, gw2_grpc) = (free_port().unwrap(), free_port().unwrap());
    let _execution2 = cluster
        .spawn_replica(
            "execution",
            "execution-2",
            &[("PROMPTOPS_EXECUTION_GRPC_ADDR", format!("127.0.0.1:{exec2}"))],
            &format!("http://127.0.0.1:{exec2}/readyz"),
        )
        .await;
    let _gateway2 = cluster
        .spawn_replica(
            "gateway",
            "gateway-2",
            &[
                ("PROMPTOPS_HTTP_ADDR", format!("127.0.0.1:{gw2_http}")),
                ("PROMPTOPS_GATEWAY_GRPC_ADDR", format!("127.0.0.1:{gw2_grpc}")),
                ("PROMPTOPS_EXECUTION_URL", format!("http://127.0.0.1:{exec2}")),
            ],
            &format!("http://127.0.0.1:{gw2_http}/readyz"),
        )
        .await;
    let gateways = [cluster.http(), format!("http://127.0.0.1:{gw2_http}")];
    let api = Api::new(cluster.http());
    let owner = api.signup("owner@budgets.test").await;
    let t = owner["access_token"].as_str().unwrap().to_owned();
    let key = call_ok(
        &api,
        Method::POST,
        "/api/v1/api-keys",
        &t,
        Some(json!({"name": "burst", "role": "editor"})),
    )
    .await;
    let secret = key["secret"].as_str().unwrap().to_owned();

    // A hard budget of 4,000 µUSD; a run of 7 input and 100 output tokens
    // costs (and reserves) 207 µUSD: at most 19 fit.
    let limit = 4_000_000_i64;
    let (status, body) = api
        .call(
            Method::PUT,
            "/api/v1/billing/budgets/burst",
            Some(&t),
            Some(
                json!({"name": "Burst", "scope": "org", "metric": "spend", "period": "day", "limit": limit}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}\n{}", cluster.processes["billing"].log());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let burst: Vec<_> = (0..60)
        .map(|i| {
            let (client, base, secret) = (client.clone(), gateways[i % 2].clone(), secret.clone());
            async move { lorem(&client, &base, &secret).await }
        })
        .collect();
    let burst = futures::future::join_all(burst).await;
    let mut completed = 0_i64;
    let mut spent = 0_i64;
    let mut refused = 0;
    for (status, body) in burst {
        match status {
            200 => {
                completed += 1;
                spent += nano(&body["run"]["cost_usd"]);
            }
            402 => {
                refused += 1;
                assert_eq!(body["type"], "urn:promptops:problem:budget-exceeded", "{body}");
                assert_eq!(body["budget"], "burst", "{body}");
                assert!(body["detail"].as_str().unwrap().contains("Burst"), "{body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    // The bound: exact input counts, so no excess at all.
    assert!(spent <= limit, "{completed} runs spent {spent} of {limit}");
    assert_eq!(spent, completed * 207_000);
    assert!(completed >= 10, "only {completed} of the 19 that fit ran");
    assert_eq!(completed + refused, 60);
    eprintln!(
        "burst of 60 on two replicas: {completed} ran, {refused} refused (402), {spent} of {limit} nano-USD spent"
    );

    // A request quota on a new key: its fourth request of the day is a 429.
    call_ok(&api, Method::DELETE, "/api/v1/billing/budgets/burst", &t, None).await;
    let quota_key = call_ok(
        &api,
        Method::POST,
        "/api/v1/api-keys",
        &t,
        Some(json!({"name": "quota", "role": "editor"})),
    )
    .await;
    let key_id = quota_key["key_id"].as_str().unwrap().to_owned();
    let quota_secret = quota_key["secret"].as_str().unwrap().to_owned();
    call_ok(
        &api,
        Method::PUT,
        "/api/v1/billing/budgets/key-quota",
        &t,
        Some(json!({"name": "Key quota", "scope": "api_key", "target": key_id, "metric": "requests", "period": "day", "limit": 3})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let (status, body) = lorem(&client, &gateways[i % 2], &quota_secret).await;
        if status == 429 {
            assert_eq!(body["budget"], "key-quota", "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    call_ok(
        &api,
        Method::DELETE,
        "/api/v1/billing/budgets/key-quota",
        &t,
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Billing killed and restarted under load: every run has its line, once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|i| {
            let (client, base, secret, stop) = (
                client.clone(),
                gateways[i % 2].clone(),
                secret.clone(),
                stop.clone(),
            );
            async move {
                let mut ok = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let response = client
                        .post(format!("{base}/api/v1/executions"))
                        .bearer_auth(&secret)
                        .json(
                            &json!({"model": "mock/echo", "messages": [{"role": "user", "content": "load"}]}),
                        )
                        .send()
                        .await
                        .unwrap();
                    // The gateways' rate limits (50/s per key each) may answer 429.
                    match response.status().as_u16() {
                        200 => ok += 1,
                        429 => {}
                        other => panic!("{other}: {}", response.text().await.unwrap()),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ok
            }
        })
        .collect();
    let mut cluster = cluster;
    let crash = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.process("billing").kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.process("billing").start();
        cluster.wait_ready("billing").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let (done, ()) = tokio::join!(futures::future::join_all(load), crash);
    let under_load: i64 = done.into_iter().sum();
    assert!(under_load > 100, "only {under_load} runs under load");
    // The killed process's projection lease expires before the new one
    // takes over (at most 10 s): until then reconciliation answers 503.
    let deadline = Instant::now() + Duration::from_secs(40);
    let reconciled = loop {
        let (status, body) = api
            .call(
                Method::GET,
                &format!("/api/v1/billing/reconcile?{}", around_now()),
                Some(&t),
                None,
            )
            .await;
        if status == 200 {
            break body;
        }
        assert!(status == 503 && Instant::now() < deadline, "{status} {body}");
    };
    assert_eq!(reconciled["reconciled"], true, "{reconciled}");
    let runs = reconciled["terminal_runs"].as_i64().unwrap();
    assert_eq!(runs, completed + 3 + under_load, "{reconciled}");
    assert_eq!(reconciled["ledger_lines"], runs);
}
