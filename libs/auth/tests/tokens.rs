//! Access tokens: what is accepted and every way a token is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use promptops_auth::tokens::{Claims, KeyRing, Revocations, SigningKey, TokenError, Verifier};

const ISSUER: &str = "https://promptops.test";
const AUDIENCE: &str = "promptops";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(nbf: i64, exp: i64) -> Claims {
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: "user-1".into(),
        org: "org-a".into(),
        role: "editor".into(),
        scopes: vec!["read".into(), "write".into()],
        jti: "jti-1".into(),
        sid: "session-1".into(),
        iat: nbf,
        nbf,
        exp,
    }
}

fn fresh() -> Claims {
    claims(now(), now() + 600)
}

fn ring() -> KeyRing {
    KeyRing::new(SigningKey::generate(now()).unwrap())
}

fn verifier(ring: &KeyRing) -> Verifier {
    Verifier::new(&ring.jwks(), ISSUER, AUDIENCE)
}

/// Re-encodes a token's payload with `edit` applied, keeping the signature.
fn tamper(token: &str, edit: impl Fn(&mut serde_json::Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    edit(&mut payload);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    format!("{}.{}.{}", parts[0], payload, parts[2])
}

#[test]
fn a_fresh_token_verifies_with_its_claims() {
    let ring = ring();
    let token = ring.sign(&fresh()).unwrap();
    let claims = verifier(&ring).verify(&token).unwrap();
    assert_eq!(claims.sub, "user-1");
    assert_eq!(claims.org, "org-a");
    assert_eq!(claims.scopes, ["read", "write"]);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(ring.active().kid()));
}

#[test]
fn every_kind_of_bad_token_is_refused() {
    let ring = ring();
    let v = verifier(&ring);
    let good = ring.sign(&fresh()).unwrap();

    assert_eq!(
        v.verify(&ring.sign(&claims(now() - 1000, now() - 400)).unwrap()),
        Err(TokenError::Expired)
    );
    assert_eq!(
        v.verify(&ring.sign(&claims(now() + 300, now() + 900)).unwrap()),
        Err(TokenError::NotYetValid)
    );

    // Tampered claims: the signature no longer matches.
    let promoted = tamper(&good, |c| c["role"] = "owner".into());
    assert_eq!(v.verify(&promoted), Err(TokenError::BadSignature));
    let other_org = tamper(&good, |c| c["org"] = "org-b".into());
    assert_eq!(v.verify(&other_org), Err(TokenError::BadSignature));

    // Signed by another key that claims the same kid.
    let impostor = KeyRing::new(
        SigningKey::from_pkcs8(
            ring.active().kid(),
            now(),
            SigningKey::generate(now()).unwrap().pkcs8_der(),
        )
        .unwrap(),
    );
    assert_eq!(
        v.verify(&impostor.sign(&fresh()).unwrap()),
        Err(TokenError::BadSignature)
    );

    // alg: none.
    let parts: Vec<&str> = good.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        ring.active().kid()
    ));
    assert!(v.verify(&format!("{none_header}.{}.", parts[1])).is_err());
    assert!(matches!(
        v.verify(&format!("{none_header}.{}.", parts[1])),
        Err(TokenError::Malformed | TokenError::Algorithm)
    ));

    // HS256 signed with the public key as the HMAC secret.
    let public = URL_SAFE_NO_PAD.decode(&ring.jwks().keys[0].x).unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(ring.active().kid().to_owned());
    let hs_token =
        jsonwebtoken::encode(&hs, &fresh(), &jsonwebtoken::EncodingKey::from_secret(&public)).unwrap();
    assert_eq!(v.verify(&hs_token), Err(TokenError::Algorithm));

    // Wrong issuer or audience.
    let mut c = fresh();
    c.iss = "https://evil.test".into();
    assert_eq!(v.verify(&ring.sign(&c).unwrap()), Err(TokenError::WrongIssuer));
    let mut c = fresh();
    c.aud = "someone-else".into();
    assert_eq!(v.verify(&ring.sign(&c).unwrap()), Err(TokenError::WrongAudience));

    // Unknown or missing kid.
    let stranger = ring_with_unknown_key();
    assert_eq!(
        v.verify(&stranger.sign(&fresh()).unwrap()),
        Err(TokenError::UnknownKey)
    );
    let no_kid = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &fresh(),
        &jsonwebtoken::EncodingKey::from_ed_der(ring.active().pkcs8_der()),
    )
    .unwrap();
    assert_eq!(v.verify(&no_kid), Err(TokenError::MissingKeyId));

    // Malformed.
    for garbage in [
        "",
        "abc",
        "a.b.c",
        "eyJhbGciOiJFZERTQSJ9..",
        &good[..good.len() - 5],
    ] {
        assert!(v.verify(garbage).is_err(), "{garbage:?}");
    }

    // Lifetimes over 15 minutes are neither signed nor accepted.
    assert_eq!(ring.sign(&claims(now(), now() + 3600)), Err(TokenError::TooLong));
    let long = jsonwebtoken::encode(
        &{
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
            h.kid = Some(ring.active().kid().to_owned());
            h
        },
        &claims(now(), now() + 3600),
        &jsonwebtoken::EncodingKey::from_ed_der(ring.active().pkcs8_der()),
    )
    .unwrap();
    assert_eq!(v.verify(&long), Err(TokenError::TooLong));
}

fn ring_with_unknown_key() -> KeyRing {
    KeyRing::new(SigningKey::generate(now()).unwrap())
}

#[test]
fn rotation_keeps_old_tokens_valid_until_the_old_key_retires() {
    let mut ring = ring();
    let old_token = ring.sign(&fresh()).unwrap();
    let old_kid = ring.active().kid().to_owned();
    ring.rotate(SigningKey::generate(now()).unwrap());
    let new_token = ring.sign(&fresh()).unwrap();
    assert_eq!(ring.jwks().keys.len(), 2);
    let v = verifier(&ring);
    assert!(
        v.verify(&old_token).is_ok(),
        "overlap window: the old key is still trusted"
    );
    assert!(v.verify(&new_token).is_ok());

    ring.retire_before(now() + 1, |_| now());
    assert_eq!(ring.jwks().keys.len(), 1);
    assert_ne!(ring.jwks().keys[0].kid, old_kid);
    let v = verifier(&ring);
    assert_eq!(v.verify(&old_token), Err(TokenError::UnknownKey));
    assert!(v.verify(&new_token).is_ok());
}

#[test]
fn keys_survive_storage_and_never_print() {
    let key = SigningKey::generate(now()).unwrap();
    let loaded = SigningKey::from_pkcs8(key.kid(), key.created_at(), key.pkcs8_der()).unwrap();
    assert_eq!(loaded.jwk(), key.jwk());
    let token = KeyRing::new(loaded).sign(&fresh()).unwrap();
    assert!(
        Verifier::new(&KeyRing::new(key).jwks(), ISSUER, AUDIENCE)
            .verify(&token)
            .is_ok()
    );
    let printed = format!("{:?}", SigningKey::generate(now()).unwrap());
    assert!(!printed.contains("pkcs8") && printed.contains("kid"), "{printed}");
}

#[test]
fn revoked_sessions_and_users_are_refused() {
    let mut revocations = Revocations::default();
    let c = fresh();
    assert!(revocations.check(&c).is_ok());
    revocations.revoke_session("session-1");
    assert_eq!(revocations.check(&c), Err(TokenError::Revoked));

    let mut revocations = Revocations::default();
    revocations.revoke_user("org-a", "user-1", c.iat);
    assert_eq!(
        revocations.check(&c),
        Err(TokenError::Revoked),
        "issued before the forced logout"
    );
    let mut later = fresh();
    later.iat = c.iat + 1;
    assert!(
        revocations.check(&later).is_ok(),
        "a login after the forced logout works"
    );
    let mut other_org = fresh();
    other_org.org = "org-b".into();
    assert!(revocations.check(&other_org).is_ok());
}

#[test]
fn the_caching_verifier_answers_like_the_verifier() {
    use promptops_auth::tokens::CachingVerifier;
    let ring = ring();
    let cached = CachingVerifier::new(verifier(&ring), 1_000);
    let token = ring.sign(&fresh()).unwrap();
    assert_eq!(
        *cached.verify(&token).unwrap(),
        verifier(&ring).verify(&token).unwrap()
    );
    assert_eq!(
        *cached.verify(&token).unwrap(),
        verifier(&ring).verify(&token).unwrap(),
        "from the cache"
    );
    // Refusals are never cached as successes.
    let tampered = tamper(&token, |c| c["role"] = "owner".into());
    assert_eq!(cached.verify(&tampered), Err(TokenError::BadSignature));
    assert_eq!(cached.verify(&tampered), Err(TokenError::BadSignature));
    let expired = ring.sign(&claims(now() - 1000, now() - 400)).unwrap();
    assert_eq!(cached.verify(&expired), Err(TokenError::Expired));
}

#[test]
fn upcoming_keys_are_published_before_they_sign() {
    let mut ring = ring();
    let next = SigningKey::generate(now()).unwrap();
    let next_kid = next.kid().to_owned();
    ring.publish(next);
    assert_eq!(ring.jwks().keys.len(), 2);
    let token = ring.sign(&fresh()).unwrap();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_ne!(
        header.kid.as_deref(),
        Some(next_kid.as_str()),
        "the upcoming key does not sign yet"
    );
    assert!(ring.jwks().keys.iter().any(|k| k.kid == next_kid));
}
