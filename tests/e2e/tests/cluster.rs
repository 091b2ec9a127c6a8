//! End to end on the production path: real nats-server (JetStream), real
//! PostgreSQL, and each of the six services as its own process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::time::Duration;

use promptops_e2e::{Cluster, SERVICES, channel, signup, with_token};
use promptops_proto::audit::v1::ListAuditEntriesRequest;
use promptops_proto::audit::v1::audit_service_client::AuditServiceClient;
use promptops_proto::common::v1::PageRequest;
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use promptops_proto::prompts::v1::{CreatePromptRequest, GetPromptRequest, ListPromptsRequest};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn prompts_stream_last_sequence(cluster: &Cluster) -> u64 {
    let client = async_nats::connect(cluster.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("EVT_PROMPTS").await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

/// The services a server lists through gRPC reflection.
async fn reflected_services(url: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut client = ServerReflectionClient::new(channel(url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test]
async fn the_slice_runs_through_every_process() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();

    // Every service is up: gRPC health, reflection, /healthz and /metrics.
    for service in SERVICES {
        let mut health = HealthClient::new(channel(&cluster.grpc_url(service)).await);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
        for path in ["/healthz", "/readyz", "/metrics"] {
            let response = http
                .get(format!("{}{path}", cluster.grpc_url(service)))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{service}{path}");
        }
    }
    for (service, expected) in [
        ("prompts", "promptops.prompts.v1.PromptService"),
        ("audit", "promptops.audit.v1.AuditService"),
        ("execution", "grpc.health.v1.Health"),
    ] {
        let services = reflected_services(&cluster.grpc_url(service)).await;
        assert!(services.iter().any(|s| s == expected), "{service}: {services:?}");
        assert!(
            services
                .iter()
                .any(|s| s == "grpc.reflection.v1.ServerReflection"),
            "{service}"
        );
    }
    let mut health = HealthClient::new(channel(&cluster.grpc_url("prompts")).await);
    let named = health
        .check(HealthCheckRequest {
            service: "promptops.prompts.v1.PromptService".into(),
        })
        .await
        .unwrap();
    assert_eq!(named.into_inner().status, ServingStatus::Serving as i32);

    // HTTP → gateway → gRPC → prompts → JetStream → projection → query.
    let (token, _) = signup(&cluster.http(), "ada@slice.test").await;
    let created = http
        .post(format!("{}/api/v1/prompts", cluster.http()))
        .bearer_auth(&token)
        .json(&json!({"name": "greeting", "template": "Hello {{name}}", "folder": "support", "tags": ["email"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = created.json().await.unwrap();
    let id = created["prompt"]["id"].as_str().unwrap().to_owned();
    let position = created["position"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/v1/prompts/{id}"));
    assert!(position.starts_with("EVT_PROMPTS:"), "{position}");

    let read: Value = http
        .get(format!("{}{location}?min_position={position}", cluster.http()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["name"], "greeting");
    assert_eq!(read["folder"], "support");
    assert_eq!(read["latest_version"], 1);

    // The list reads the catalog projection: wait for it to apply the write.
    let list: Value = http
        .get(format!(
            "{}/api/v1/prompts?min_position={position}",
            cluster.http()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["prompts"].as_array().unwrap().len(), 1);

    // The audit service projected the event from JetStream.
    let audit: Value = http
        .get(format!(
            "{}/api/v1/audit/entries?min_position={position}&action_prefix=prompt.",
            cluster.http()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["action"], "prompt.created");
    assert_eq!(entries[0]["resource_id"], id.as_str());
    assert_eq!(entries[0]["summary"], "created prompt \"greeting\" in support");
    assert_eq!(entries[0]["position"], position.as_str());
    assert_eq!(
        entries[0]["trace_id"].as_str().unwrap().len(),
        32,
        "the trace crossed gateway → prompts → audit"
    );

    // The OpenAPI description is served and names the routes.
    let doc: Value = http
        .get(format!("{}/openapi.json", cluster.http()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/prompts",
        "/api/v1/prompts/{prompt_id}",
        "/api/v1/audit/entries",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from /openapi.json"
        );
    }
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let cluster = Cluster::start().await;
    let mut prompts = PromptServiceClient::new(channel(&cluster.grpc_url("prompts")).await);
    let mut audit = AuditServiceClient::new(channel(&cluster.grpc_url("audit")).await);
    let (acme, _) = signup(&cluster.http(), "owner@acme.test").await;
    let (globex, _) = signup(&cluster.http(), "owner@globex.test").await;
    let tokens = std::collections::HashMap::from([("acme", acme.clone()), ("globex", globex.clone())]);

    let created = prompts
        .create_prompt(with_token(
            &acme,
            CreatePromptRequest {
                name: "secret-sauce".into(),
                version: promptops_e2e::text_version("only for acme"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let id = created.prompt.unwrap().prompt_id;
    let position = created.position.unwrap();

    let own = prompts
        .get_prompt(with_token(
            &acme,
            GetPromptRequest {
                prompt_id: id.clone(),
                min_position: Some(position.clone()),
            },
        ))
        .await
        .unwrap();
    assert_eq!(own.into_inner().name, "secret-sauce");

    let other = prompts
        .get_prompt(with_token(
            &globex,
            GetPromptRequest {
                prompt_id: id.clone(),
                min_position: Some(position.clone()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound);

    let list = |org: &'static str| {
        let mut prompts = prompts.clone();
        let token = tokens[org].clone();
        let position = position.clone();
        async move {
            prompts
                .list_prompts(with_token(
                    &token,
                    ListPromptsRequest {
                        page: Some(PageRequest::default()),
                        min_position: Some(position.clone()),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .prompts
                .len()
        }
    };
    assert_eq!(list("acme").await, 1);
    assert_eq!(list("globex").await, 0);

    let entries = |org: &'static str| {
        let mut audit = audit.clone();
        let position = position.clone();
        let token = tokens[org].clone();
        async move {
            audit
                .list_audit_entries(with_token(
                    &token,
                    ListAuditEntriesRequest {
                        min_position: Some(position),
                        action_prefix: "prompt.".into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .entries
                .len()
        }
    };
    assert_eq!(entries("acme").await, 1);
    assert_eq!(entries("globex").await, 0);

    // Over HTTP too: the other org's prompt does not exist for globex.
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/prompts/{id}", cluster.http());
    let via_gateway = http.get(&url).bearer_auth(&globex).send().await.unwrap();
    assert_eq!(via_gateway.status(), 404);
    let via_gateway = http.get(&url).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(via_gateway.status(), 200);
    let forged = prompts
        .get_prompt(with_token(
            "not-a-token",
            GetPromptRequest {
                prompt_id: id.clone(),
                min_position: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), tonic::Code::Unauthenticated);

    // No credential, no access.
    let anonymous = audit
        .list_audit_entries(tonic::Request::new(ListAuditEntriesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn bad_input_gets_problem_json_and_appends_nothing() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/prompts", cluster.http());
    let (token, _) = signup(&cluster.http(), "ada@bad-input.test").await;
    let auth = format!("Bearer {token}");
    let before = prompts_stream_last_sequence(&cluster).await;

    let oversized = json!({"name": "big", "template": "x".repeat(2 * 1024 * 1024)}).to_string();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "malformed JSON",
            http.post(&url)
                .header("content-type", "application/json")
                .body("{\"name\": "),
            400,
        ),
        (
            "wrong type",
            http.post(&url).json(&json!({"name": 42, "template": "t"})),
            400,
        ),
        ("missing field", http.post(&url).json(&json!({"name": "n"})), 400),
        (
            "unknown field",
            http.post(&url)
                .json(&json!({"name": "n", "template": "t", "colour": "red"})),
            400,
        ),
        ("not JSON", http.post(&url).body("name=n"), 415),
        (
            "oversized body",
            http.post(&url)
                .header("content-type", "application/json")
                .body(oversized),
            413,
        ),
        (
            "invalid values",
            http.post(&url)
                .json(&json!({"name": "", "template": "", "tags": ["a b"]})),
            400,
        ),
        (
            "bad request id",
            http.post(&url)
                .json(&json!({"name": "n", "template": "t", "request_id": "nope"})),
            400,
        ),
        (
            "bad page token",
            http.get(format!("{url}?page_token=garbage")),
            400,
        ),
        ("bad page size", http.get(format!("{url}?page_size=many")), 400),
        (
            "bad position",
            http.get(format!("{}/api/v1/audit/entries?min_position=7", cluster.http())),
            400,
        ),
        ("bad prompt id", http.get(format!("{url}/not-a-uuid")), 400),
        (
            "unknown prompt",
            http.get(format!("{url}/01a20125-5f0d-73fc-abe4-776e54f36191")),
            404,
        ),
        (
            "unknown route",
            http.get(format!("{}/api/v1/nothing", cluster.http())),
            404,
        ),
        ("wrong method", http.delete(&url), 405),
    ];
    for (what, request, status) in cases {
        let response = request.header("authorization", &auth).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status, "{what}: {problem}");
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:promptops:problem:"),
            "{what}"
        );
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    let no_token = http
        .post(&url)
        .json(&json!({"name": "n", "template": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");
    let invalid: Value = http
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"name": "", "template": "", "tags": ["a b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "tags[0]", "version.template"]);

    assert_eq!(
        prompts_stream_last_sequence(&cluster).await,
        before,
        "a rejected request appended to the log"
    );
}

#[tokio::test]
async fn audit_catches_up_exactly_once_after_sigkill() {
    const PROMPTS: usize = 300;
    let mut cluster = Cluster::start().await;
    let prompts = PromptServiceClient::new(channel(&cluster.grpc_url("prompts")).await);
    let (token, _) = signup(&cluster.http(), "ada@crash.test").await;

    let writer = {
        let prompts = prompts.clone();
        let token = token.clone();
        async move {
            let mut done = 0;
            for batch in 0..PROMPTS / 10 {
                let mut calls = Vec::new();
                for i in 0..10 {
                    let mut client = prompts.clone();
                    let token = token.clone();
                    calls.push(async move {
                        client
                            .create_prompt(with_token(
                                &token,
                                CreatePromptRequest {
                                    name: format!("p{batch}-{i}"),
                                    version: promptops_e2e::text_version("t"),
                                    ..Default::default()
                                },
                            ))
                            .await
                            .unwrap()
                    });
                }
                done += futures::future::join_all(calls).await.len();
            }
            done
        }
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.process("audit").kill();
        tokio::time::sleep(Duration::from_millis(700)).await;
        cluster.process("audit").start();
    };
    let (written, ()) = tokio::join!(writer, killer);
    assert_eq!(written, PROMPTS);
    cluster.wait_ready("audit").await;

    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.database_url)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (count, distinct_positions, min, max) = loop {
        let row: (i64, i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), COUNT(DISTINCT stream_sequence), MIN(stream_sequence), MAX(stream_sequence)
             FROM audit.audit_entries WHERE chain = 'EVT_PROMPTS'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        if row.0 >= PROMPTS as i64 || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        count,
        PROMPTS as i64,
        "audit log:\n{}",
        cluster.process("audit").log()
    );
    assert_eq!(distinct_positions, PROMPTS as i64);
    assert_eq!(
        (min, max),
        (Some(1), Some(PROMPTS as i64)),
        "every event of the stream, once"
    );
    let checkpoint: i64 = sqlx::query_scalar(
        "SELECT position FROM audit.projection_checkpoints WHERE projection = 'audit_trail' AND stream = 'EVT_PROMPTS'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(checkpoint, PROMPTS as i64);
    assert!(
        cluster.process("audit").log().matches("resources open").count() >= 2,
        "audit was not restarted"
    );
}

#[tokio::test]
async fn sigterm_stops_a_service_cleanly() {
    let mut cluster = Cluster::start().await;
    let code = cluster.process("prompts").terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", cluster.process("prompts").log());
    // The gateway reports its dependency gone.
    let ready = reqwest::get(format!("{}/readyz", cluster.http())).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(body["failing"]["prompts"].is_string(), "{body}");
}
