//! Token verification cost: every supported algorithm on a cold token
//! (parse, key lookup, signature, claims) and the cached path a client
//! sending the same token again takes.

#[path = "../tests/support/jwt.rs"]
mod jwt;

use aether_gateway::auth::keys::{KeySet, SUPPORTED, parse_jwks};
use aether_gateway::{AuthMiddleware, AuthValidationPolicy};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use jwt::{TestKey, claims};
use serde_json::json;
use std::hint::black_box;

fn middleware(key: &TestKey) -> AuthMiddleware {
    let set = parse_jwks(jwt::jwks(&[key]).as_bytes(), &SUPPORTED, true).unwrap();
    let mut ks = KeySet::new();
    for k in set.keys {
        ks.push(k);
    }
    AuthMiddleware::new(AuthValidationPolicy {
        issuer: "aether-auth".into(),
        required_claims: vec!["sub".into(), "role".into()],
    })
    .with_audiences(["aether-api"])
    .with_algorithms(SUPPORTED.to_vec())
    .with_keys(&ks)
}

fn key(alg: Algorithm) -> TestKey {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => TestKey::rsa(alg, "k"),
        ES256 | ES384 => TestKey::ec(alg, "k"),
        EdDSA => TestKey::ed25519("k"),
        HS256 => TestKey::hmac(alg, "k", 32),
        HS384 => TestKey::hmac(alg, "k", 48),
        HS512 => TestKey::hmac(alg, "k", 64),
        other => panic!("no test key for {other:?}"),
    }
}

fn verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("auth/verify_uncached");
    for alg in SUPPORTED {
        let k = key(alg);
        let mw = middleware(&k);
        let token = k.sign(&claims("player-7", json!(["player", "creator"])));
        mw.validate_uncached(&token).expect("valid");
        g.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| mw.validate_uncached(black_box(&token)).unwrap())
        });
    }
    g.finish();

    let k = key(Algorithm::RS256);
    let mw = middleware(&k);
    let token = k.sign(&claims("player-7", json!(["player", "creator"])));
    mw.verify(&token).expect("valid");
    c.bench_function("auth/verify_cached/RS256", |b| {
        b.iter(|| mw.verify(black_box(&token)).unwrap())
    });
    c.bench_function("auth/reject_malformed", |b| {
        b.iter(|| {
            mw.verify(black_box("eyJhbGciOiJub25lIn0.e30."))
                .unwrap_err()
        })
    });
}

criterion_group!(benches, verify);
criterion_main!(benches);
