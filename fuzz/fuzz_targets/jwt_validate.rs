//! Token validation on arbitrary input, two ways:
//! - the raw bytes as a token: never accepted (nothing here knows the secret);
//! - the bytes as a header and a payload that are then *correctly signed*, so
//!   the claim checks are reached: an accepted token always satisfies every
//!   rule of the policy, whatever JSON the fuzzer wrote.
#![no_main]

use aether_gateway::auth::VerifyKey;
use aether_gateway::clock::ManualClock;
use aether_gateway::{AuthMiddleware, AuthValidationPolicy};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const NOW: u64 = 1_800_000_000;
const LEEWAY: u64 = 30;
const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret!";

fn middleware() -> AuthMiddleware {
    AuthMiddleware::new(AuthValidationPolicy {
        issuer: "aether-auth".into(),
        required_claims: vec!["sub".into(), "role".into()],
    })
    .with_audiences(["aether-api"])
    .with_algorithms(vec![Algorithm::HS256])
    .with_leeway_seconds(LEEWAY)
    .with_clock(ManualClock::new(NOW))
    .with_key(VerifyKey::hmac(SECRET, Algorithm::HS256, Some("k1".into())).unwrap())
}

fn check_accepted(payload: &[u8], token: &aether_gateway::Token) {
    let claims: serde_json::Map<String, Value> =
        serde_json::from_slice(payload).expect("an accepted payload is a JSON object");
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some("aether-auth"));
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == "aether-api",
        Some(Value::Array(l)) => l.iter().any(|a| a == "aether-api"),
        _ => false,
    };
    assert!(aud_ok, "audience");
    assert!(token.expires_at + LEEWAY >= NOW, "expired token accepted");
    for t in ["nbf", "iat"] {
        if let Some(v) = claims.get(t) {
            assert!(v.as_f64().is_some_and(|x| x <= (NOW + LEEWAY) as f64), "{t}");
        }
    }
    assert_eq!(claims.get("sub").and_then(Value::as_str), Some(token.subject.as_str()));
    assert!(!token.subject.is_empty(), "required sub");
    assert!(!token.roles.is_empty() || claims.get("role").is_some_and(|r| !r.is_null()), "required role");
}

fuzz_target!(|data: &[u8]| {
    thread_local!(static MW: AuthMiddleware = middleware());
    let Some((&mode, rest)) = data.split_first() else { return };
    MW.with(|mw| {
        if mode & 1 == 0 {
            if let Ok(s) = std::str::from_utf8(rest) {
                assert!(mw.validate(s).is_err(), "an unsigned input was accepted");
            }
            return;
        }
        // header 0xFF payload; the header defaults to a valid one.
        let (header, payload) = match rest.iter().position(|&b| b == 0xFF) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&br#"{"alg":"HS256","kid":"k1"}"#[..], rest),
        };
        let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &EncodingKey::from_secret(SECRET).unwrap(),
            Algorithm::HS256,
        )
        .unwrap();
        let token = format!("{input}.{sig}");
        if let Ok(t) = mw.validate(&token) {
            let h: Value = serde_json::from_slice(header).expect("accepted header is JSON");
            assert_eq!(h["alg"], "HS256");
            assert!(h.get("crit").is_none(), "crit accepted");
            check_accepted(payload, &t);
            // The cached path gives the same verdict.
            assert_eq!(mw.validate(&token).as_ref(), Ok(&t));
        }
    });
});
