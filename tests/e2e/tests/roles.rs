//! The role matrix, end to end: every role × every mutating endpoint (the
//! prompt registry's and identity's) is allowed or denied exactly as
//! `roles::allows` (and so the README's matrix) says. Members join through
//! real invitations.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use promptops_auth::roles::{Permission, Role, allows};
use promptops_e2e::{Api, Cluster};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn expected(role: Role, permission: Permission) -> StatusCode {
    if allows(role, permission) {
        StatusCode::OK
    } else {
        StatusCode::FORBIDDEN
    }
}

/// 2xx counts as allowed.
fn outcome(status: StatusCode) -> StatusCode {
    if status.is_success() {
        StatusCode::OK
    } else {
        status
    }
}

#[tokio::test]
async fn every_role_on_every_mutating_identity_endpoint() {
    let cluster = Cluster::start().await;
    let api = Api::new(cluster.http());
    let owner = api.signup("owner@acme.test").await;
    let org = owner["org_id"].as_str().unwrap().to_owned();
    let owner_token = owner["access_token"].as_str().unwrap().to_owned();

    let mut actors = vec![(Role::Owner, owner_token.clone())];
    for (role, email) in [
        (Role::Admin, "admin@acme.test"),
        (Role::Editor, "editor@acme.test"),
        (Role::Viewer, "viewer@acme.test"),
    ] {
        let member = api.member(&owner_token, &org, email, role.as_str()).await;
        assert_eq!(member["role"], role.as_str());
        actors.push((role, member["access_token"].as_str().unwrap().to_owned()));
    }
    let (status, members) = api
        .call(Method::GET, "/api/v1/members", Some(&owner_token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(members["members"].as_array().unwrap().len(), 4);

    // Each actor acts on a target of its own: a viewer member and a key.
    for (i, (role, token)) in actors.iter().enumerate() {
        let role = *role;
        let target = api
            .member(&owner_token, &org, &format!("target{i}@acme.test"), "viewer")
            .await;
        let target_id = target["user_id"].as_str().unwrap().to_owned();
        let (_, key) = api
            .call(
                Method::POST,
                "/api/v1/api-keys",
                Some(&owner_token),
                Some(json!({"name": "k", "role": "viewer"})),
            )
            .await;
        let key_id = key["key_id"].as_str().unwrap().to_owned();
        let (_, sessions) = api
            .call(
                Method::GET,
                "/api/v1/sessions",
                target["access_token"].as_str(),
                None,
            )
            .await;
        let target_session = sessions["sessions"][0]["session_id"].as_str().unwrap().to_owned();

        let cases: Vec<(&str, Method, String, Option<Value>, Permission)> = vec![
            (
                "create prompt",
                Method::POST,
                "/api/v1/prompts".into(),
                Some(json!({"name": format!("p{i}"), "template": "t"})),
                Permission::Write,
            ),
            (
                "create key",
                Method::POST,
                "/api/v1/api-keys".into(),
                Some(json!({"name": "n", "role": "viewer"})),
                Permission::ManageApiKeys,
            ),
            (
                "rotate key",
                Method::POST,
                format!("/api/v1/api-keys/{key_id}/rotate"),
                None,
                Permission::ManageApiKeys,
            ),
            (
                "invite",
                Method::POST,
                "/api/v1/invitations".into(),
                Some(json!({"email": format!("new{i}@acme.test"), "role": "viewer"})),
                Permission::ManageMembers,
            ),
            (
                "change role",
                Method::PATCH,
                format!("/api/v1/members/{target_id}"),
                Some(json!({"role": "viewer"})),
                Permission::ManageMembers,
            ),
            (
                "revoke another's session",
                Method::DELETE,
                format!("/api/v1/sessions/{target_session}"),
                None,
                Permission::ManageSessions,
            ),
            (
                "force logout",
                Method::POST,
                format!("/api/v1/members/{target_id}/logout"),
                None,
                Permission::ManageSessions,
            ),
            (
                "revoke key",
                Method::DELETE,
                format!("/api/v1/api-keys/{key_id}"),
                None,
                Permission::ManageApiKeys,
            ),
            (
                "remove member",
                Method::DELETE,
                format!("/api/v1/members/{target_id}"),
                None,
                Permission::ManageMembers,
            ),
        ];
        for (what, method, path, body, permission) in cases {
            let (status, answer) = api.call(method, &path, Some(token), body).await;
            assert_eq!(
                outcome(status),
                expected(role, permission),
                "{role} → {what}: {answer}"
            );
            if status == StatusCode::FORBIDDEN {
                assert_eq!(answer["type"], "urn:promptops:problem:permission-denied");
            }
        }
    }

    // Rank rules beyond the matrix: an admin cannot touch an owner or make one.
    let admin_token = &actors[1].1;
    let owner_id = owner["user_id"].as_str().unwrap();
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/members/{owner_id}"),
            Some(admin_token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .call(
            Method::POST,
            "/api/v1/invitations",
            Some(admin_token),
            Some(json!({"email": "boss@acme.test", "role": "owner"})),
        )
        .await;
    assert_eq!(status, 403);
    // The last owner stays.
    let (status, problem) = api
        .call(
            Method::DELETE,
            &format!("/api/v1/members/{owner_id}"),
            Some(&owner_token),
            None,
        )
        .await;
    assert_eq!(status, 400, "{problem}");

    // A role change ends the member's sessions at once.
    let editor_id = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["email"] == "editor@acme.test")
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = api
        .call(
            Method::PATCH,
            &format!("/api/v1/members/{editor_id}"),
            Some(&owner_token),
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = api
        .call(Method::GET, "/api/v1/sessions", Some(&actors[2].1), None)
        .await;
    assert_eq!(status, 401);
    let relogin = api.login("editor@acme.test", &org).await;
    assert_eq!(relogin["role"], "viewer");

    // Members of another org get nothing: not even a hint.
    let outsider = api.signup("outsider@globex.test").await;
    let outsider_token = outsider["access_token"].as_str().unwrap();
    for (method, path) in [
        (Method::PATCH, format!("/api/v1/members/{editor_id}")),
        (Method::DELETE, format!("/api/v1/members/{editor_id}")),
        (Method::POST, format!("/api/v1/members/{editor_id}/logout")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"role": "viewer"}));
        let (status, _) = api.call(method, &path, Some(outsider_token), body).await;
        assert_eq!(status, 404, "{path}");
    }
    let path = format!("/api/v1/orgs/{org}/invitations/not-an-invitation/accept");
    let (status, _) = api.call(Method::POST, &path, Some(outsider_token), None).await;
    assert_eq!(status, 404);
}
