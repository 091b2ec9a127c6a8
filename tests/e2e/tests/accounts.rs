//! Accounts over HTTP on the production path (real NATS JetStream and
//! PostgreSQL, each service its own process): sign-up, login, refresh
//! rotation and reuse detection, logout, throttling, and that no secret ever
//! reaches the event log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use futures::StreamExt as _;
use promptops_auth::tokens::{Jwks, Verifier};
use promptops_e2e::{Cluster, channel, with_token};
use promptops_proto::audit::v1::ListAuditEntriesRequest;
use promptops_proto::audit::v1::audit_service_client::AuditServiceClient;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

async fn post(http: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = http.post(url).json(&body).send().await.unwrap();
    let status = response.status();
    let body = if status == StatusCode::NO_CONTENT {
        Value::Null
    } else {
        response.json().await.unwrap()
    };
    (status, body)
}

#[tokio::test]
async fn accounts_sessions_and_refresh_rotation() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", cluster.http());

    // Bad input: every reason at once, then a clean sign-up.
    let (status, problem) = post(
        &http,
        url("/api/v1/auth/signup"),
        json!({"email": "ada", "password": "short"}),
    )
    .await;
    assert_eq!(status, 400);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password"], "{problem}");
    let (status, problem) = post(
        &http,
        url("/api/v1/auth/signup"),
        json!({"email": "ada@example.com", "password": "P@ssw0rd1234"}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        problem["errors"][0]["description"],
        "is one of the most common passwords"
    );

    let (status, signed_up) = post(
        &http,
        url("/api/v1/auth/signup"),
        json!({"email": "Ada@Example.com", "password": PASSWORD, "org_name": "Analytical Engines"}),
    )
    .await;
    assert_eq!(status, 201, "{signed_up}");
    assert_eq!(signed_up["token_type"], "Bearer");
    assert_eq!(signed_up["expires_in"], 900);
    assert_eq!(signed_up["role"], "owner");
    let org_id = signed_up["org_id"].as_str().unwrap().to_owned();

    let (status, _) = post(
        &http,
        url("/api/v1/auth/signup"),
        json!({"email": "ada@example.COM", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 409, "emails are unique regardless of case");

    // The access token verifies with the published keys.
    let jwks: Jwks = http
        .get(url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let verifier = Verifier::new(&jwks, "promptops", "promptops-api");
    let claims = verifier
        .verify(signed_up["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.org, org_id);
    assert_eq!(claims.role, "owner");
    assert_eq!(claims.exp - claims.iat, 900);
    assert!(claims.scopes.iter().any(|s| s == "org:manage"));

    // Login: a wrong password and an unknown email get the same answer.
    let (wrong_status, wrong) = post(
        &http,
        url("/api/v1/auth/login"),
        json!({"email": "ada@example.com", "password": "not the password"}),
    )
    .await;
    let (unknown_status, unknown) = post(
        &http,
        url("/api/v1/auth/login"),
        json!({"email": "nobody@example.com", "password": "not the password"}),
    )
    .await;
    assert_eq!(
        (wrong_status, unknown_status),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(wrong["detail"], unknown["detail"]);
    let (status, login) = post(
        &http,
        url("/api/v1/auth/login"),
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["org_id"], org_id.as_str());

    // Refresh rotates; presenting a spent token revokes the whole family.
    let first = login["refresh_token"].as_str().unwrap().to_owned();
    let (status, second) = post(
        &http,
        url("/api/v1/auth/refresh"),
        json!({"refresh_token": first}),
    )
    .await;
    assert_eq!(status, 200);
    let second = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let (status, reused) = post(
        &http,
        url("/api/v1/auth/refresh"),
        json!({"refresh_token": first}),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        reused["detail"].as_str().unwrap().contains("already used"),
        "{reused}"
    );
    let (status, _) = post(
        &http,
        url("/api/v1/auth/refresh"),
        json!({"refresh_token": second}),
    )
    .await;
    assert_eq!(status, 401, "the newer token of the revoked family is dead too");

    // Logout makes the refresh token useless; logging out again is fine.
    let signup_refresh = signed_up["refresh_token"].as_str().unwrap().to_owned();
    let (status, _) = post(
        &http,
        url("/api/v1/auth/logout"),
        json!({"refresh_token": signup_refresh}),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = post(
        &http,
        url("/api/v1/auth/logout"),
        json!({"refresh_token": signup_refresh}),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = post(
        &http,
        url("/api/v1/auth/refresh"),
        json!({"refresh_token": signup_refresh}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(
        &http,
        url("/api/v1/auth/refresh"),
        json!({"refresh_token": "por_forged"}),
    )
    .await;
    assert_eq!(status, 401);

    // Identity events are audited in the org's trail.
    let (status, fresh) = post(
        &http,
        url("/api/v1/auth/login"),
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200);
    let fresh_token = fresh["access_token"].as_str().unwrap().to_owned();
    let mut audit = AuditServiceClient::new(channel(&cluster.grpc_url("audit")).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let actions = loop {
        let entries = audit
            .list_audit_entries(with_token(&fresh_token, ListAuditEntriesRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .entries;
        let actions: Vec<String> = entries.into_iter().map(|e| e.action).collect();
        if actions.iter().any(|a| a == "refresh.reuse.detected") || std::time::Instant::now() > deadline {
            break actions;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // The founder's joining is part of `org.created` (folded, no entry of its own).
    assert!(!actions.iter().any(|a| a == "member.joined"), "{actions:?}");
    for expected in [
        "org.created",
        "session.started",
        "session.refreshed",
        "refresh.reuse.detected",
        "session.revoked",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }

    // No password, token or hash ever reached the event log.
    let client = async_nats::connect(cluster.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("EVT_IDENTITY").await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(1000).messages().await.unwrap();
    let mut seen = 0;
    let secrets = [PASSWORD, &first, &second, &signup_refresh, "$argon2id$"];
    while let Some(message) = batch.next().await {
        let message = message.unwrap();
        let text = String::from_utf8_lossy(&message.payload).to_string();
        for secret in secrets {
            assert!(!text.contains(secret), "a secret reached the event log");
        }
        assert!(
            !text.contains(&promptops_auth::secrets::hash(&first)),
            "a token hash reached the event log"
        );
        seen += 1;
    }
    assert!(seen >= 8, "read {seen} identity events");
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account() {
    let cluster = Cluster::start().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", cluster.http());
    let (status, _) = post(
        &http,
        url("/api/v1/auth/signup"),
        json!({"email": "bob@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 201);
    for _ in 0..5 {
        let (status, _) = post(
            &http,
            url("/api/v1/auth/login"),
            json!({"email": "bob@example.com", "password": "guess guess guess"}),
        )
        .await;
        assert_eq!(status, 401);
    }
    // Now even the right password waits.
    let response = http
        .post(url("/api/v1/auth/login"))
        .json(&json!({"email": "bob@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn one_address_guessing_many_accounts_is_throttled() {
    use promptops_e2e::AllInOne;
    let all = AllInOne::start().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", all.http());
    let (status, _) = post(
        &http,
        url("/api/v1/auth/signup"),
        json!({"email": "carol@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 201);
    // 30 wrong guesses, each at a different (mostly unknown) account.
    for i in 0..30 {
        let (status, _) = post(
            &http,
            url("/api/v1/auth/login"),
            json!({"email": format!("guess{i}@example.com"), "password": "guess guess guess"}),
        )
        .await;
        assert_eq!(status, 401, "guess {i}");
    }
    // Now this address waits, even for an account it never tried.
    let (status, problem) = post(
        &http,
        url("/api/v1/auth/login"),
        json!({"email": "carol@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 429, "{problem}");
}
