//! Credentials over HTTP on the production path: bearer access tokens and
//! API keys, what each role may do with keys and sessions, rotation with a
//! grace period, revocation taking effect at once, rejected tokens, and
//! tenants that never see each other's keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use promptops_e2e::{Api, Cluster};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn create_key(api: &Api, bearer: &str, role: &str) -> (StatusCode, Value) {
    api.call(
        reqwest::Method::POST,
        "/api/v1/api-keys",
        Some(bearer),
        Some(json!({"name": format!("{role} key"), "role": role})),
    )
    .await
}

#[tokio::test]
async fn api_keys_sessions_and_rejected_credentials() {
    use reqwest::Method;
    let cluster = Cluster::start().await;
    let api = Api::new(cluster.http());
    let owner = api.signup("owner@acme.test").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();

    // No credential, or a bad one: 401 with WWW-Authenticate.
    let response = api
        .http
        .get(format!("{}/api/v1/api-keys", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["role"] = "owner".into();
    claims["org"] = "someone-elses-org".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    for bad in [
        tampered.as_str(),
        alg_none.as_str(),
        "garbage",
        "pok_0123456789abcdef0123456789abcdef_guessguessguess",
        &token[..token.len() - 3],
    ] {
        let (status, problem) = api.call(Method::GET, "/api/v1/api-keys", Some(bad), None).await;
        assert_eq!(status, 401, "{bad}");
        assert_eq!(
            problem["detail"], "the credential is not valid",
            "one answer for every refusal"
        );
    }

    // Keys: created with a secret shown once, listed without it.
    let (status, admin_key) = create_key(&api, &token, "admin").await;
    assert_eq!(status, 201, "{admin_key}");
    let admin_secret = admin_key["secret"].as_str().unwrap().to_owned();
    assert!(admin_secret.starts_with("pok_"));
    let (status, list) = api
        .call(Method::GET, "/api/v1/api-keys", Some(&token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["api_keys"].as_array().unwrap().len(), 1);
    assert!(list["api_keys"][0].get("secret").is_none(), "{list}");
    assert!(!list.to_string().contains(&admin_secret));

    // A key is a bearer credential with its role's rights, no more.
    let (status, _) = api
        .call(Method::GET, "/api/v1/api-keys", Some(&admin_secret), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = create_key(&api, &admin_secret, "owner").await;
    assert_eq!(status, 403, "an admin key cannot mint an owner key");
    let (status, viewer_key) = create_key(&api, &admin_secret, "viewer").await;
    assert_eq!(status, 201);
    let viewer_secret = viewer_key["secret"].as_str().unwrap().to_owned();
    let (status, _) = api
        .call(Method::GET, "/api/v1/api-keys", Some(&viewer_secret), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = create_key(&api, &viewer_secret, "viewer").await;
    assert_eq!(status, 403);

    // Bad input is named.
    for (body, field) in [
        (json!({"name": "x", "role": "boss"}), "role"),
        (json!({"name": "", "role": "viewer"}), "name"),
        (
            json!({"name": "x", "role": "viewer", "scopes": ["write"]}),
            "scopes[0]",
        ),
        (
            json!({"name": "x", "role": "viewer", "expires_at": 1}),
            "expires_at",
        ),
    ] {
        let (status, problem) = api
            .call(Method::POST, "/api/v1/api-keys", Some(&token), Some(body))
            .await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }

    // Rotation: the new secret works, the old one for the grace period.
    let key_id = admin_key["key_id"].as_str().unwrap();
    let (status, rotated) = api
        .call(
            Method::POST,
            &format!("/api/v1/api-keys/{key_id}/rotate"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, admin_secret);
    for secret in [&new_secret, &admin_secret] {
        let (status, _) = api
            .call(Method::GET, "/api/v1/api-keys", Some(secret), None)
            .await;
        assert_eq!(status, 200);
    }

    // Another tenant sees none of it.
    let other = api.signup("owner@globex.test").await;
    let other_token = other["access_token"].as_str().unwrap().to_owned();
    let (status, list) = api
        .call(Method::GET, "/api/v1/api-keys", Some(&other_token), None)
        .await;
    assert_eq!(status, 200);
    assert!(list["api_keys"].as_array().unwrap().is_empty());
    for (method, path) in [
        (Method::POST, format!("/api/v1/api-keys/{key_id}/rotate")),
        (Method::DELETE, format!("/api/v1/api-keys/{key_id}")),
    ] {
        let (status, _) = api.call(method, &path, Some(&other_token), None).await;
        assert_eq!(status, 404, "{path}");
    }

    // The prompts service checks keys itself (and caches the answer).
    use promptops_proto::prompts::v1::ListPromptsRequest;
    use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
    let mut prompts = PromptServiceClient::new(promptops_e2e::channel(&cluster.grpc_url("prompts")).await);
    prompts
        .list_prompts(promptops_e2e::with_token(
            &new_secret,
            ListPromptsRequest::default(),
        ))
        .await
        .unwrap();

    // Revocation works at once, for the new and the old secret.
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{key_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    for secret in [&new_secret, &admin_secret] {
        let (status, _) = api
            .call(Method::GET, "/api/v1/api-keys", Some(secret), None)
            .await;
        assert_eq!(status, 401);
    }
    // ... and the service's cached answer is dropped by the revocation event.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = prompts
            .list_prompts(promptops_e2e::with_token(
                &new_secret,
                ListPromptsRequest::default(),
            ))
            .await;
        match answer {
            Err(status) if status.code() == tonic::Code::Unauthenticated => break,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "the service still accepts a revoked key"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Sessions: listed, and revoking one stops its access token at once.
    let (status, sessions) = api
        .call(Method::GET, "/api/v1/sessions", Some(&token), None)
        .await;
    assert_eq!(status, 200);
    let sessions = sessions["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["current"], true);
    let session_id = sessions[0]["session_id"].as_str().unwrap();
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/sessions/{session_id}"),
            Some(&other_token),
            None,
        )
        .await;
    assert_eq!(status, 404, "another org's session does not exist for you");
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/sessions/{session_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(Method::GET, "/api/v1/sessions", Some(&token), None)
        .await;
    assert_eq!(status, 401, "the revoked session's access token no longer works");
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": owner["refresh_token"]})),
        )
        .await;
    assert_eq!(status, 401, "nor does its refresh token");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    use promptops_e2e::AllInOne;
    let all = AllInOne::start_with(&[
        ("PROMPTOPS_RATE_LIMIT_PER_KEY", "1"),
        ("PROMPTOPS_RATE_LIMIT_PER_KEY_BURST", "3"),
    ])
    .await;
    let api = Api::new(all.http());
    let owner = api.signup("owner@busy.test").await;
    let token = owner["access_token"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = api
            .http
            .get(format!("{}/api/v1/prompts", api.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry_after), "{retry_after}");
            assert_eq!(response.headers()["content-type"], "application/problem+json");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "the burst passes");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Another account has its own key bucket.
    let other = api.signup("owner@calm.test").await;
    let (status, _) = api
        .call(
            reqwest::Method::GET,
            "/api/v1/prompts",
            other["access_token"].as_str(),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

/// Tokens minted with the gateway's real signing key (read from its
/// database) but wrong in one way each are refused by the prompts service
/// itself; the same key with right claims is accepted, so the refusals are
/// about the claims, not the key.
#[tokio::test]
async fn services_refuse_every_kind_of_bad_access_token() {
    use promptops_auth::tokens::{Claims, KeyRing, SigningKey};
    use promptops_e2e::{channel, with_token};
    use promptops_proto::prompts::v1::ListPromptsRequest;
    use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;

    let cluster = Cluster::start().await;
    let api = Api::new(cluster.http());
    let owner = api.signup("owner@forge.test").await;
    let genuine = owner["access_token"].as_str().unwrap().to_owned();
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&cluster.database_url)
        .await
        .unwrap();
    let (kid, der): (String, Vec<u8>) = sqlx::query_as(
        "SELECT kid, private_der FROM gateway.signing_keys ORDER BY created_at_ms DESC LIMIT 1",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    let ring = KeyRing::new(SigningKey::from_pkcs8(&kid, 0, &der).unwrap());
    let parts: Vec<&str> = genuine.split('.').collect();
    let real: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let with = |edit: &dyn Fn(&mut Claims)| {
        let mut claims = real.clone();
        claims.iat = now;
        claims.nbf = now;
        claims.exp = now + 600;
        edit(&mut claims);
        ring.sign(&claims).unwrap()
    };

    let prompts = PromptServiceClient::new(channel(&cluster.grpc_url("prompts")).await);
    let ask = |token: String| {
        let mut prompts = prompts.clone();
        async move {
            prompts
                .list_prompts(with_token(&token, ListPromptsRequest::default()))
                .await
                .map(|_| ())
        }
    };
    assert!(ask(genuine.clone()).await.is_ok());
    assert!(ask(with(&|_| {})).await.is_ok(), "the test's key is the real one");

    let mut public_hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    public_hs.kid = Some(kid.clone());
    let public = URL_SAFE_NO_PAD.decode(&ring.jwks().keys[0].x).unwrap();
    let hs256 = jsonwebtoken::encode(
        &public_hs,
        &real,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    let other_key = KeyRing::new(SigningKey::generate(now).unwrap()).sign(&{
        let mut c = real.clone();
        c.iat = now;
        c.nbf = now;
        c.exp = now + 600;
        c
    });
    let cases = [
        (
            "expired",
            with(&|c| {
                c.iat = now - 2000;
                c.nbf = now - 2000;
                c.exp = now - 1200;
            }),
        ),
        (
            "not yet valid",
            with(&|c| {
                c.nbf = now + 600;
                c.exp = now + 900;
            }),
        ),
        ("wrong issuer", with(&|c| c.iss = "https://evil.test".into())),
        ("wrong audience", with(&|c| c.aud = "another-api".into())),
        ("HS256 with the public key", hs256),
        ("unknown key", other_key.unwrap()),
    ];
    for (what, token) in cases {
        let status = ask(token).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{what}");
    }
}

/// Signing keys rotate with no downtime: the new key is published before it
/// signs, and tokens of the old key keep working during the overlap.
#[tokio::test]
async fn signing_keys_rotate_without_downtime() {
    use promptops_e2e::AllInOne;
    let all = AllInOne::start_with(&[
        ("PROMPTOPS_SIGNING_KEY_ROTATION_SECS", "3"),
        ("PROMPTOPS_SIGNING_KEY_LEAD_SECS", "2"),
        ("PROMPTOPS_SIGNING_KEY_OVERLAP_SECS", "3600"),
        ("PROMPTOPS_JWKS_REFRESH_SECS", "1"),
    ])
    .await;
    let api = Api::new(all.http());
    let first = api.signup("owner@rotate.test").await;
    let first_token = first["access_token"].as_str().unwrap().to_owned();
    let kid_of = |token: &str| jsonwebtoken::decode_header(token).unwrap().kid.unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let second_token = loop {
        // Every request in between must succeed with the first token.
        let (status, _) = api
            .call(reqwest::Method::GET, "/api/v1/prompts", Some(&first_token), None)
            .await;
        assert_eq!(status, 200, "the old key's token kept working");
        let (status, login) = api
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": "owner@rotate.test", "password": "correct horse battery staple"})),
            )
            .await;
        assert_eq!(status, 200);
        let token = login["access_token"].as_str().unwrap().to_owned();
        let (status, _) = api
            .call(reqwest::Method::GET, "/api/v1/prompts", Some(&token), None)
            .await;
        assert_eq!(status, 200, "a token of the newest key works at once");
        if kid_of(&token) != kid_of(&first_token) {
            break token;
        }
        assert!(std::time::Instant::now() < deadline, "the key never rotated");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let (_, jwks) = api
        .call(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&kid_of(&first_token).as_str()) && kids.contains(&kid_of(&second_token).as_str()),
        "{kids:?}"
    );
    for token in [&first_token, &second_token] {
        let (status, _) = api
            .call(reqwest::Method::GET, "/api/v1/prompts", Some(token), None)
            .await;
        assert_eq!(status, 200);
    }
}
