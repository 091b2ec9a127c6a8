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
use promptops_e2e::Cluster;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn signup(&self, email: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/signup",
                None,
                Some(json!({"email": email, "password": "correct horse battery staple"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn create_key(&self, bearer: &str, role: &str) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            "/api/v1/api-keys",
            Some(bearer),
            Some(json!({"name": format!("{role} key"), "role": role})),
        )
        .await
    }
}

#[tokio::test]
async fn api_keys_sessions_and_rejected_credentials() {
    use reqwest::Method;
    let cluster = Cluster::start().await;
    let api = Api {
        http: reqwest::Client::new(),
        base: cluster.http(),
    };
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
    let (status, admin_key) = api.create_key(&token, "admin").await;
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
    let (status, _) = api.create_key(&admin_secret, "owner").await;
    assert_eq!(status, 403, "an admin key cannot mint an owner key");
    let (status, viewer_key) = api.create_key(&admin_secret, "viewer").await;
    assert_eq!(status, 201);
    let viewer_secret = viewer_key["secret"].as_str().unwrap().to_owned();
    let (status, _) = api
        .call(Method::GET, "/api/v1/api-keys", Some(&viewer_secret), None)
        .await;
    assert_eq!(status, 403);
    let (status, _) = api.create_key(&viewer_secret, "viewer").await;
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
