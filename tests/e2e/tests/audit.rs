//! Audit trail and analytics, end to end on the all-in-one (embedded log,
//! SQLite) and on JetStream + PostgreSQL with one process per service:
//! one entry per mutating API, filters and bad input, export, the
//! compliance report, other orgs kept out, tampering (edit, delete, reorder,
//! rewrite) named by `promptops audit verify`, and a rebuild by replay that
//! equals the incremental read models.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity,
    reason = "integration tests: a panic is a failed assertion; rows are compared as tuples"
)]

use std::time::{Duration, Instant};

use promptops_e2e::{AllInOne, Api, Cluster};
use promptops_testkit::workspace_binary;
use reqwest::Method;
use serde_json::{Value, json};

fn token(body: &Value) -> String {
    body["access_token"].as_str().unwrap().to_owned()
}

/// Every entry of the org, oldest first (the JSON Lines export).
async fn entries(api: &Api, token: &str) -> Vec<Value> {
    let (_, text) = api
        .text(Method::GET, "/api/v1/audit/export", Some(token), None)
        .await;
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits until the org has `count` entries; returns the actions after `skip`.
async fn new_actions(api: &Api, token: &str, skip: usize, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = entries(api, token).await;
        if all.len() >= count || Instant::now() > deadline {
            // A moment more: an extra entry would show up now.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let all = entries(api, token).await;
            return all[skip.min(all.len())..]
                .iter()
                .map(|e| e["action"].as_str().unwrap().to_owned())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call_ok(api: &Api, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, body) = api.call(method.clone(), path, Some(token), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

fn hour_range() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    format!(
        "from={}&to={}",
        fmt(now - time::Duration::hours(1)),
        fmt(now + time::Duration::hours(1))
    )
}

#[tokio::test]
async fn every_mutation_is_one_entry_tampering_is_named_and_a_rebuild_is_identical() {
    let mut platform = AllInOne::start_with(&[("PROMPTOPS_AUDIT_CHECKPOINT_SECS", "1")]).await;
    let api = Api::new(platform.http());
    let owner = api.signup("owner@audit.test").await;
    let org = owner["org_id"].as_str().unwrap().to_owned();
    let t = token(&owner);
    let mut seen = 0;
    let mut step = async |expected: &[&str]| {
        let actions = new_actions(&api, &t, seen, seen + expected.len()).await;
        seen += expected.len();
        actions
    };
    assert_eq!(
        step(&["org.created", "session.started"]).await,
        ["org.created", "session.started"]
    );

    // Every mutating API, one by one, with the one entry each makes.
    // (With a User-Agent: the entry shows where the request came from.)
    let prompt: Value = api
        .http
        .post(format!("{}/api/v1/prompts", api.base))
        .bearer_auth(&t)
        .header("user-agent", "audit-e2e/1.0")
        .json(&json!({"name": "greet", "template": "Hello {{name}}"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let prompt_id = prompt["prompt"]["id"].as_str().unwrap().to_owned();
    assert_eq!(step(&["prompt.created"]).await, ["prompt.created"]);
    let p = format!("/api/v1/prompts/{prompt_id}");
    call_ok(
        &api,
        Method::POST,
        &format!("{p}/versions"),
        &t,
        Some(json!({"template": "Hi {{name}}"})),
    )
    .await;
    assert_eq!(step(&["version.created"]).await, ["version.created"]);
    call_ok(
        &api,
        Method::PUT,
        &format!("{p}/labels/production"),
        &t,
        Some(json!({"version": 2})),
    )
    .await;
    assert_eq!(step(&["label.moved"]).await, ["label.moved"]);
    call_ok(&api, Method::DELETE, &format!("{p}/labels/production"), &t, None).await;
    assert_eq!(step(&["label.removed"]).await, ["label.removed"]);
    call_ok(
        &api,
        Method::PATCH,
        &p,
        &t,
        Some(json!({"description": "says hello"})),
    )
    .await;
    assert_eq!(
        step(&["prompt.details.changed"]).await,
        ["prompt.details.changed"]
    );
    call_ok(&api, Method::POST, &format!("{p}/archive"), &t, Some(json!({}))).await;
    assert_eq!(step(&["prompt.archived"]).await, ["prompt.archived"]);
    call_ok(&api, Method::POST, &format!("{p}/restore"), &t, Some(json!({}))).await;
    assert_eq!(step(&["prompt.restored"]).await, ["prompt.restored"]);
    call_ok(
        &api,
        Method::PUT,
        "/api/v1/prompt-policy",
        &t,
        Some(json!({"protected_labels": ["production", "staging"]})),
    )
    .await;
    assert_eq!(step(&["label.policy.set"]).await, ["label.policy.set"]);
    let key = call_ok(
        &api,
        Method::POST,
        "/api/v1/api-keys",
        &t,
        Some(json!({"name": "ci", "role": "editor"})),
    )
    .await;
    let key_id = key["key_id"].as_str().unwrap().to_owned();
    assert_eq!(step(&["api.key.created"]).await, ["api.key.created"]);
    call_ok(
        &api,
        Method::POST,
        &format!("/api/v1/api-keys/{key_id}/rotate"),
        &t,
        None,
    )
    .await;
    assert_eq!(step(&["api.key.rotated"]).await, ["api.key.rotated"]);
    call_ok(
        &api,
        Method::DELETE,
        &format!("/api/v1/api-keys/{key_id}"),
        &t,
        None,
    )
    .await;
    assert_eq!(step(&["api.key.revoked"]).await, ["api.key.revoked"]);
    // A member: invited, joins, role changed, granted, removed.
    let own = api.signup("member@audit.test").await;
    let invitation = call_ok(
        &api,
        Method::POST,
        "/api/v1/invitations",
        &t,
        Some(json!({"email": "member@audit.test", "role": "viewer"})),
    )
    .await;
    assert_eq!(step(&["member.invited"]).await, ["member.invited"]);
    let accept = format!(
        "/api/v1/orgs/{org}/invitations/{}/accept",
        invitation["invitation_id"].as_str().unwrap()
    );
    call_ok(
        &api,
        Method::POST,
        &accept,
        own["access_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(step(&["member.joined"]).await, ["member.joined"]);
    let member_id = own["user_id"].as_str().unwrap().to_owned();
    call_ok(
        &api,
        Method::PATCH,
        &format!("/api/v1/members/{member_id}"),
        &t,
        Some(json!({"role": "editor"})),
    )
    .await;
    assert_eq!(step(&["member.role.changed"]).await, ["member.role.changed"]);
    let grant = json!({"folder": "support", "role": "admin"});
    call_ok(
        &api,
        Method::PUT,
        &format!("/api/v1/members/{member_id}/grants"),
        &t,
        Some(grant),
    )
    .await;
    assert_eq!(step(&["grant.added"]).await, ["grant.added"]);
    call_ok(
        &api,
        Method::DELETE,
        &format!("/api/v1/members/{member_id}/grants?folder=support"),
        &t,
        None,
    )
    .await;
    assert_eq!(step(&["grant.removed"]).await, ["grant.removed"]);
    call_ok(
        &api,
        Method::DELETE,
        &format!("/api/v1/members/{member_id}"),
        &t,
        None,
    )
    .await;
    assert_eq!(step(&["member.removed"]).await, ["member.removed"]);
    // Retention.
    let set = call_ok(
        &api,
        Method::PUT,
        "/api/v1/audit/retention",
        &t,
        Some(json!({"audit_days": 400})),
    )
    .await;
    assert_eq!(step(&["retention.policy.set"]).await, ["retention.policy.set"]);
    let position = set["position"].as_str().unwrap();
    let policy = call_ok(
        &api,
        Method::GET,
        &format!("/api/v1/audit/retention?min_position={position}"),
        &t,
        None,
    )
    .await;
    assert_eq!(
        (policy["audit_days"].as_u64(), policy["is_default"].as_bool()),
        (Some(400), Some(false)),
        "{policy}"
    );
    assert_eq!(policy["default_audit_days"], 365);
    let (status, problem) = api
        .call(
            Method::PUT,
            "/api/v1/audit/retention",
            Some(&t),
            Some(json!({"audit_days": 5})),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(promptops_e2e::problem_fields(&problem), ["audit_days"]);
    for (body, fields) in [
        (
            json!({"audit_days": 5, "run_payload_days": 99_999}),
            vec!["audit_days", "run_payload_days"],
        ),
        (json!({}), vec!["audit_days"]),
        (json!({"keep": 3}), vec![]),
    ] {
        let (status, problem) = api
            .call(
                Method::PUT,
                "/api/v1/audit/retention",
                Some(&t),
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body}: {problem}");
        if !fields.is_empty() {
            assert_eq!(
                promptops_e2e::problem_fields(&problem),
                fields,
                "{body}: {problem}"
            );
        }
    }
    // Run payloads: a field not given stays (audit_days is still 400).
    let set = call_ok(
        &api,
        Method::PUT,
        "/api/v1/audit/retention",
        &t,
        Some(json!({"run_payload_days": 30})),
    )
    .await;
    assert_eq!(step(&["retention.policy.set"]).await, ["retention.policy.set"]);
    let position = set["position"].as_str().unwrap();
    let policy = call_ok(
        &api,
        Method::GET,
        &format!("/api/v1/audit/retention?min_position={position}"),
        &t,
        None,
    )
    .await;
    assert_eq!(
        (
            policy["audit_days"].as_u64(),
            policy["run_payload_days"].as_u64(),
            policy["default_run_payload_days"].as_u64()
        ),
        (Some(400), Some(30), Some(90)),
        "{policy}"
    );
    // Sessions: a refresh, and a second session that logs out.
    let refresh = json!({"refresh_token": owner["refresh_token"].as_str().unwrap()});
    let (status, _) = api
        .call(Method::POST, "/api/v1/auth/refresh", None, Some(refresh))
        .await;
    assert_eq!(status, 200);
    assert_eq!(step(&["session.refreshed"]).await, ["session.refreshed"]);
    let second = api.login("owner@audit.test", &org).await;
    assert_eq!(step(&["session.started"]).await, ["session.started"]);
    let logout = json!({"refresh_token": second["refresh_token"].as_str().unwrap()});
    let (status, _) = api
        .call(Method::POST, "/api/v1/auth/logout", None, Some(logout))
        .await;
    assert_eq!(status, 204);
    assert_eq!(step(&["session.revoked"]).await, ["session.revoked"]);
    // Providers and models (the org's first provider also creates its data
    // key: folded into `provider.set`).
    let (_mock, mock_url) = promptops_e2e::mock_provider(platform.dir.path()).await;
    let provider = json!({"kind": "openai_compatible", "base_url": format!("{mock_url}/v1"), "api_key": "sk-audit-PLAINTEXT-1234"});
    call_ok(&api, Method::PUT, "/api/v1/providers/local", &t, Some(provider)).await;
    assert_eq!(step(&["provider.set"]).await, ["provider.set"]);
    let model = json!({"id": "local/small", "upstream_model": "small", "context_window": 8000, "max_output_tokens": 1000,
        "input_price_per_mtok_usd": "0.15", "output_price_per_mtok_usd": "0.60"});
    call_ok(&api, Method::POST, "/api/v1/models", &t, Some(model)).await;
    assert_eq!(step(&["model.set"]).await, ["model.set"]);
    call_ok(&api, Method::DELETE, "/api/v1/models?id=local/small", &t, None).await;
    assert_eq!(step(&["model.removed"]).await, ["model.removed"]);
    call_ok(&api, Method::DELETE, "/api/v1/providers/local", &t, None).await;
    assert_eq!(step(&["provider.removed"]).await, ["provider.removed"]);
    // A conversation: started, and a message whose run is the entry (the
    // turn's own events are folded into it).
    let conversation = call_ok(
        &api,
        Method::POST,
        "/api/v1/conversations",
        &t,
        Some(json!({"title": "Support", "model": "mock/echo"})),
    )
    .await;
    assert_eq!(step(&["conversation.started"]).await, ["conversation.started"]);
    let id = conversation["id"].as_str().unwrap();
    call_ok(
        &api,
        Method::POST,
        &format!("/api/v1/conversations/{id}/messages"),
        &t,
        Some(json!({"content": "hi"})),
    )
    .await;
    assert_eq!(step(&["execution.completed"]).await, ["execution.completed"]);
    // A dataset and a version of it (its case chunks are folded in).
    let dataset = call_ok(
        &api,
        Method::POST,
        "/api/v1/datasets",
        &t,
        Some(json!({"name": "golden"})),
    )
    .await;
    assert_eq!(step(&["dataset.created"]).await, ["dataset.created"]);
    let response = api
        .http
        .post(format!(
            "{}/api/v1/datasets/{}/versions",
            api.base,
            dataset["id"].as_str().unwrap()
        ))
        .bearer_auth(&t)
        .header("content-type", "text/csv")
        .body("question,expected\nhi,hello\n")
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    assert_eq!(step(&["dataset.version.added"]).await, ["dataset.version.added"]);
    // Runs: completed and failed, one entry each (their start is folded in).
    let run = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hello there"}]});
    call_ok(&api, Method::POST, "/api/v1/executions", &t, Some(run)).await;
    assert_eq!(step(&["execution.completed"]).await, ["execution.completed"]);
    let failing = json!({"model": "mock/fail", "messages": [{"role": "user", "content": "x"}]});
    let _ = api
        .call(Method::POST, "/api/v1/executions", Some(&t), Some(failing))
        .await;
    assert_eq!(step(&["execution.failed"]).await, ["execution.failed"]);
    let all = entries(&api, &t).await;
    let failed = all.last().unwrap();
    assert_eq!(failed["outcome"], "failure", "{failed}");
    // Every entry caused through the gateway knows the client's address.
    assert!(all.iter().all(|e| e["client_address"] == "127.0.0.1"), "{all:?}");
    let created = all.iter().find(|e| e["action"] == "prompt.created").unwrap();
    assert_eq!(created["user_agent"], "audit-e2e/1.0", "{created}");
    // Nothing secret or private in any summary.
    assert!(
        all.iter()
            .all(|e| !e["summary"].as_str().unwrap().contains("hello there"))
    );

    // Filters and bad input.
    let (status, page) = api
        .call(
            Method::GET,
            "/api/v1/audit/entries?action_prefix=api.key.&page_size=2",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_eq!(page["entries"][0]["action"], "api.key.revoked");
    let next = page["next_page_token"].as_str().unwrap();
    let (_, rest) = api
        .call(
            Method::GET,
            &format!("/api/v1/audit/entries?action_prefix=api.key.&page_size=2&page_token={next}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["entries"][0]["action"], "api.key.created");
    let (_, by_text) = api
        .call(
            Method::GET,
            "/api/v1/audit/entries?text=HELLO%20%7B%7B",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(
        by_text["entries"].as_array().unwrap().len(),
        0,
        "summaries never show templates: {by_text}"
    );
    let (_, failures) = api
        .call(
            Method::GET,
            "/api/v1/audit/entries?outcome=failure",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(failures["entries"].as_array().unwrap().len(), 1);
    let (_, on_prompt) = api
        .call(
            Method::GET,
            &format!("/api/v1/audit/entries?resource_id={prompt_id}"),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(on_prompt["entries"].as_array().unwrap().len(), 7);
    for (query, field) in [
        ("from=2026-12-02T10:00:00Z&to=2026-12-01T10:00:00Z", "to"),
        ("page_size=500", "page_size"),
        ("page_token=not-a-token", "page_token"),
        ("outcome=maybe", "outcome"),
        ("from=yesterday", "from"),
        ("actor_kind=robot", "actor_kind"),
        ("colour=red", ""),
    ] {
        let (status, problem) = api
            .call(
                Method::GET,
                &format!("/api/v1/audit/entries?{query}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 400, "{query}: {problem}");
        if !field.is_empty() {
            assert_eq!(
                promptops_e2e::problem_fields(&problem),
                [field],
                "{query}: {problem}"
            );
        }
    }
    let (status, _) = api
        .call(Method::GET, "/api/v1/audit/export?format=xml", Some(&t), None)
        .await;
    assert_eq!(status, 400);
    let (status, problem) = api
        .call(Method::GET, "/api/v1/audit/report", Some(&t), None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        promptops_e2e::problem_fields(&problem),
        ["from", "to"],
        "{problem}"
    );

    // CSV export: a header and one line per entry.
    let csv = api
        .http
        .get(format!("{}/api/v1/audit/export?format=csv", api.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(reader.records().count(), seen);

    // A failed login (recorded per user): the org's report counts it.
    let wrong = json!({"email": "owner@audit.test", "password": "not the password at all", "org_id": org});
    let (status, _) = api
        .call(Method::POST, "/api/v1/auth/login", None, Some(wrong))
        .await;
    assert_eq!(status, 401);

    // The compliance report.
    let (status, report) = api
        .call(
            Method::GET,
            &format!("/api/v1/audit/report?{}", hour_range()),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["total_entries"], seen as u64);
    let privileged: Vec<&str> = report["privileged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        privileged,
        [
            "label.moved",
            "label.removed",
            "label.policy.set",
            "api.key.created",
            "api.key.rotated",
            "api.key.revoked",
            "member.invited",
            "member.role.changed",
            "grant.added",
            "grant.removed",
            "member.removed",
            "retention.policy.set",
            "retention.policy.set",
            "provider.set",
            "model.set",
            "model.removed",
            "provider.removed",
        ]
    );
    assert_eq!(report["verification"]["intact"], true, "{report}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let (_, report) = api
            .call(
                Method::GET,
                &format!("/api/v1/audit/report?{}", hour_range()),
                Some(&t),
                None,
            )
            .await;
        if report["failed_logins"] == 1 || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["failed_logins"], 1, "{report}");
    assert_eq!(
        report["security_events"][0]["action"], "user.login.failed",
        "{report}"
    );
    assert_eq!(
        report["security_events"][0]["client_address"], "127.0.0.1",
        "{report}"
    );

    // Tenancy: another org sees nothing of this one.
    let other = api.signup("other@audit.test").await;
    let other_entries = entries(&api, &token(&other)).await;
    assert!(
        other_entries
            .iter()
            .all(|e| e["resource_id"] != prompt_id.as_str())
    );
    assert_eq!(other_entries.len(), 2, "{other_entries:?}");
    let (_, kpis) = api
        .call(
            Method::GET,
            &format!("/api/v1/analytics/kpis?{}", hour_range()),
            Some(&token(&other)),
            None,
        )
        .await;
    assert_eq!(kpis["runs"], 0, "{kpis}");

    // Analytics: the three runs (one failed), and bad input.
    let deadline = Instant::now() + Duration::from_secs(10);
    let kpis = loop {
        let (status, kpis) = api
            .call(
                Method::GET,
                &format!("/api/v1/analytics/kpis?{}", hour_range()),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 200, "{kpis}");
        if kpis["runs"] == 3 || Instant::now() > deadline {
            break kpis;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            kpis["runs"].as_u64(),
            kpis["completed"].as_u64(),
            kpis["failed"].as_u64()
        ),
        (Some(3), Some(2), Some(1)),
        "{kpis}"
    );
    assert_eq!(kpis["errors_by_class"].as_object().unwrap().len(), 1, "{kpis}");
    assert_eq!(kpis["latency_ms"]["count"], 2);
    for (query, field) in [
        ("to=2026-12-02T10:00:00Z".to_owned(), "from"),
        (
            "from=2026-12-02T10:00:00Z&to=2026-12-01T10:00:00Z".to_owned(),
            "to",
        ),
        (
            "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z".to_owned(),
            "to",
        ),
        (format!("{}&prompt_version=3", hour_range()), "prompt_version"),
        (format!("{}&limit=5", hour_range()), "limit"),
    ] {
        let (status, problem) = api
            .call(
                Method::GET,
                &format!("/api/v1/analytics/kpis?{query}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(status, 400, "{query}: {problem}");
        assert_eq!(
            promptops_e2e::problem_fields(&problem),
            [field],
            "{query}: {problem}"
        );
    }

    // Verify: intact, and every chain's head signed once the signer has run.
    let cli = |args: &[&str]| {
        std::process::Command::new(workspace_binary("promptops").unwrap())
            .args(args)
            .env("PROMPTOPS_URL", platform.http())
            .env("PROMPTOPS_API_KEY", &t)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let verified = loop {
        let out = cli(&["audit", "verify"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
        let chains = verified["chains"].as_array().unwrap();
        let signed = chains
            .iter()
            .all(|c| c["last_checkpoint_sequence"] == c["length"]);
        if (signed && chains.len() == 4) || Instant::now() > deadline {
            break verified;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(verified["intact"], true);
    assert_eq!(verified["entries_checked"], seen as u64);
    let chains = verified["chains"].as_array().unwrap();
    let names: Vec<&str> = chains.iter().map(|c| c["chain"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["EVT_IDENTITY", "EVT_PROMPTS", "EVT_EXECUTION", "EVT_EVALUATION"],
        "{verified}"
    );
    assert!(
        chains
            .iter()
            .all(|c| c["last_checkpoint_sequence"] == c["length"]),
        "every head signed: {verified}"
    );
    assert!(
        verified["checkpoints_checked"].as_u64().unwrap() >= 4,
        "{verified}"
    );

    // Tamper with the database while the platform runs: verify names the entry.
    let data = platform.dir.path().join("data");
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&format!("sqlite://{}?mode=rw", data.join("audit.db").display()))
        .await
        .unwrap();
    let row = async |action: &str| -> (String, i64, String, String) {
        sqlx::query_as("SELECT chain, chain_sequence, event_id, summary FROM audit_entries WHERE org_id = $1 AND action = $2")
            .bind(&org).bind(action).fetch_one(&db).await.unwrap()
    };
    let broken = |expect_sequence: i64, expect_event: &str, expect_reason: &str| {
        let out = cli(&["audit", "verify"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
        let b = &verified["first_break"];
        assert_eq!(verified["intact"], false);
        assert_eq!(b["chain_sequence"].as_i64(), Some(expect_sequence), "{b}");
        assert_eq!(b["event_id"], expect_event, "{b}");
        assert!(b["reason"].as_str().unwrap().contains(expect_reason), "{b}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("BROKEN"));
    };
    // 1. An edited row.
    let (chain, sequence, event_id, summary) = row("member.role.changed").await;
    sqlx::query("UPDATE audit_entries SET summary = 'nothing happened' WHERE event_id = $1")
        .bind(&event_id)
        .execute(&db)
        .await
        .unwrap();
    broken(sequence, &event_id, "edited");
    sqlx::query("UPDATE audit_entries SET summary = $2 WHERE event_id = $1")
        .bind(&event_id)
        .bind(&summary)
        .execute(&db)
        .await
        .unwrap();
    assert!(cli(&["audit", "verify"]).status.success());
    // 2. A deleted row (copied aside first, to put back).
    sqlx::query("CREATE TABLE aside AS SELECT * FROM audit_entries WHERE event_id = $1")
        .bind(&event_id)
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_entries WHERE event_id = $1")
        .bind(&event_id)
        .execute(&db)
        .await
        .unwrap();
    broken(sequence, "", "missing");
    sqlx::query("INSERT INTO audit_entries SELECT * FROM aside")
        .execute(&db)
        .await
        .unwrap();
    assert!(cli(&["audit", "verify"]).status.success());
    // 3. Two rows swapped in order.
    let swap = "UPDATE audit_entries SET chain_sequence = CASE chain_sequence WHEN $3 THEN $4 ELSE $3 END
                WHERE org_id = $1 AND chain = $2 AND chain_sequence IN ($3, $4)";
    sqlx::query("UPDATE audit_entries SET chain_sequence = -chain_sequence WHERE org_id = $1 AND chain = $2 AND chain_sequence IN ($3, $4)")
        .bind(&org).bind(&chain).bind(sequence).bind(sequence + 1).execute(&db).await.unwrap();
    sqlx::query(
        &swap
            .replace("$3 THEN $4 ELSE $3", "-$3 THEN $4 ELSE $3")
            .replace("IN ($3, $4)", "IN (-$3, -$4)"),
    )
    .bind(&org)
    .bind(&chain)
    .bind(sequence)
    .bind(sequence + 1)
    .execute(&db)
    .await
    .unwrap();
    let moved: String = sqlx::query_scalar(
        "SELECT event_id FROM audit_entries WHERE org_id = $1 AND chain = $2 AND chain_sequence = $3",
    )
    .bind(&org)
    .bind(&chain)
    .bind(sequence)
    .fetch_one(&db)
    .await
    .unwrap();
    broken(sequence, &moved, "");
    sqlx::query("UPDATE audit_entries SET chain_sequence = -chain_sequence WHERE org_id = $1 AND chain = $2 AND chain_sequence IN ($3, $4)")
        .bind(&org).bind(&chain).bind(sequence).bind(sequence + 1).execute(&db).await.unwrap();
    sqlx::query(
        &swap
            .replace("$3 THEN $4 ELSE $3", "-$3 THEN $4 ELSE $3")
            .replace("IN ($3, $4)", "IN (-$3, -$4)"),
    )
    .bind(&org)
    .bind(&chain)
    .bind(sequence)
    .bind(sequence + 1)
    .execute(&db)
    .await
    .unwrap();
    assert!(cli(&["audit", "verify"]).status.success());
    // 4. An edit with every later hash recomputed (a consistent chain, head
    //    included): only the signed checkpoint can tell, and does.
    let original = promptops_audit::trail::chain_entries(&db, &org, &chain, 1, 10_000)
        .await
        .unwrap();
    let write = async |entries: &[promptops_audit::chain::StoredEntry]| {
        for e in entries {
            sqlx::query(
                "UPDATE audit_entries SET summary = $4, previous_hash = $5, hash = $6
                 WHERE org_id = $1 AND chain = $2 AND chain_sequence = $3",
            )
            .bind(&org)
            .bind(&chain)
            .bind(e.content.chain_sequence as i64)
            .bind(&e.content.summary)
            .bind(&e.previous_hash)
            .bind(&e.hash)
            .execute(&db)
            .await
            .unwrap();
        }
        let head = entries.last().unwrap();
        sqlx::query("UPDATE audit_chains SET head_hash = $3 WHERE org_id = $1 AND chain = $2")
            .bind(&org)
            .bind(&chain)
            .bind(&head.hash)
            .execute(&db)
            .await
            .unwrap();
    };
    let mut rewritten = original.clone();
    let mut previous = promptops_audit::chain::GENESIS.to_owned();
    for e in &mut rewritten {
        if e.content.chain_sequence == sequence as u64 {
            e.content.summary = "nothing happened".into();
        }
        e.previous_hash = previous.clone();
        e.hash = promptops_audit::chain::entry_hash(&e.content, &previous);
        previous = e.hash.clone();
    }
    write(&rewritten).await;
    let out = cli(&["audit", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = verified["first_break"]["reason"].as_str().unwrap();
    assert!(reason.contains("signed checkpoint"), "{verified}");
    assert!(
        verified["first_break"]["chain_sequence"].as_i64().unwrap() >= sequence,
        "{verified}"
    );
    write(&original).await;
    assert!(cli(&["audit", "verify"]).status.success());

    // Rebuild: stop, replay both projections from the log, compare.
    platform.process.terminate(Duration::from_secs(10));
    let dump = async |db: &sqlx::AnyPool| {
        let entries: Vec<(String, String, i64, String, String, String)> = sqlx::query_as(
            "SELECT org_id, chain, chain_sequence, event_id, summary, hash FROM audit_entries
             ORDER BY org_id, chain, chain_sequence",
        )
        .fetch_all(db)
        .await
        .unwrap();
        let buckets: Vec<(String, String, i64, String, i64, i64, String, String)> = sqlx::query_as(
            "SELECT org_id, granularity, bucket_start_ms, model, runs, cost_nano_usd, latency, errors FROM analytics_buckets
             ORDER BY org_id, granularity, bucket_start_ms, prompt_id, prompt_version, model",
        ).fetch_all(db).await.unwrap();
        (entries, buckets)
    };
    let before = dump(&db).await;
    // Two models × three granularities (more when the runs straddled a minute).
    assert!(before.1.len() >= 6, "{:?}", before.1);
    for name in ["audit_trail", "analytics"] {
        let out = std::process::Command::new(workspace_binary("promptops").unwrap())
            .args(["projections", "rebuild", name])
            .env("PROMPTOPS_DATA_DIR", &data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["projection"], name);
    }
    let after = dump(&db).await;
    assert_eq!(
        before.0, after.0,
        "the rebuilt audit trail equals the incremental one"
    );
    assert_eq!(
        before.1, after.1,
        "the rebuilt analytics equal the incremental ones"
    );
    let out = std::process::Command::new(workspace_binary("promptops").unwrap())
        .args(["projections", "rebuild", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    db.close().await;
}

/// The same on the production path: JetStream, PostgreSQL, one process per service.
#[tokio::test]
async fn the_trail_and_analytics_work_on_jetstream_and_postgres() {
    let cluster = Cluster::start().await;
    let api = Api::new(cluster.http());
    let owner = api.signup("owner@cluster-audit.test").await;
    let t = token(&owner);
    call_ok(
        &api,
        Method::POST,
        "/api/v1/prompts",
        &t,
        Some(json!({"name": "p", "template": "Hi"})),
    )
    .await;
    for _ in 0..3 {
        let run = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hello"}]});
        call_ok(&api, Method::POST, "/api/v1/executions", &t, Some(run)).await;
    }
    let actions = new_actions(&api, &t, 0, 6).await;
    assert_eq!(
        actions,
        [
            "org.created",
            "session.started",
            "prompt.created",
            "execution.completed",
            "execution.completed",
            "execution.completed"
        ]
    );
    // Text search (a trigram index on PostgreSQL), case-insensitive.
    let (status, found) = api
        .call(
            Method::GET,
            "/api/v1/audit/entries?text=MOCK%2FECHO%20Completed",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["entries"].as_array().unwrap().len(), 3, "{found}");
    // The client's address crossed gateway → prompts / execution as metadata.
    let all = entries(&api, &t).await;
    assert!(all.iter().all(|e| e["client_address"] == "127.0.0.1"), "{all:?}");
    let (status, verified) = api
        .call(Method::GET, "/api/v1/audit/verify", Some(&t), None)
        .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(verified["entries_checked"], 6);
    let deadline = Instant::now() + Duration::from_secs(10);
    let kpis = loop {
        let (_, kpis) = api
            .call(
                Method::GET,
                &format!("/api/v1/analytics/kpis?{}", hour_range()),
                Some(&t),
                None,
            )
            .await;
        if kpis["runs"] == 3 || Instant::now() > deadline {
            break kpis;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kpis["completed"], 3, "{kpis}");
    let (status, top) = api
        .call(
            Method::GET,
            &format!("/api/v1/analytics/top?{}&dimension=model", hour_range()),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(top["items"][0]["key"], "mock/echo");
    let (status, report) = api
        .call(
            Method::GET,
            &format!("/api/v1/audit/report?{}&format=csv", hour_range()),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let (status, series) = api
        .call(
            Method::GET,
            &format!("/api/v1/analytics/timeseries?{}", hour_range()),
            Some(&t),
            None,
        )
        .await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["granularity"], "minute");
    let runs: u64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kpis"]["runs"].as_u64().unwrap())
        .sum();
    assert_eq!(runs, 3);
}
