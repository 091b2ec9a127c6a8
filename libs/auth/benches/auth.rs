//! The cost of checking a credential, per request.
//!
//!     cargo bench --workspace --bench auth
//!
//! Verifying an access token (EdDSA signature, header, claims; and through
//! the cache that remembers verified tokens until they expire) and checking
//! an API key secret against its stored hash (the cached path: SHA-256 and a
//! constant-time compare). 100,000 checks each after 10,000 warm-up checks,
//! each timed on its own; p50 / p99 / max in microseconds.

#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark harness")]

use std::time::Instant;

use hdrhistogram::Histogram;
use promptops_auth::secrets;
use promptops_auth::tokens::{CachingVerifier, Claims, KeyRing, SigningKey, Verifier};

fn measure(name: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        assert!(check());
    }
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    for _ in 0..100_000 {
        let started = Instant::now();
        let ok = check();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        assert!(ok);
        histogram.record(nanos.max(1)).unwrap();
    }
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<40} p50={:.2}µs p99={:.2}µs max={:.2}µs",
        us(0.5),
        us(0.99),
        histogram.max() as f64 / 1000.0
    );
}

fn main() {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ring = KeyRing::new(SigningKey::generate(now).unwrap());
    let claims = Claims {
        iss: "https://promptops.bench".into(),
        aud: "promptops".into(),
        sub: "0192c0de0000700080000000000000aa".into(),
        org: "acme".into(),
        role: "editor".into(),
        scopes: vec!["read".into(), "write".into(), "labels:move".into()],
        jti: "0192c0de0000700080000000000000bb".into(),
        sid: "0192c0de0000700080000000000000cc".into(),
        iat: now,
        nbf: now,
        exp: now + 900,
    };
    let token = ring.sign(&claims).unwrap();
    let verifier = Verifier::new(&ring.jwks(), "https://promptops.bench", "promptops");
    measure("JWT verify (EdDSA), uncached", || verifier.verify(&token).is_ok());
    let cached = CachingVerifier::new(verifier.clone(), 100_000);
    measure("JWT verify, cached (per request)", || {
        cached.verify(&token).is_ok()
    });

    let (_, key, stored) = secrets::new_api_key();
    measure("API key check (SHA-256 + compare)", || {
        secrets::api_key_id(&key).is_some() && secrets::matches(&key, &stored)
    });
}
