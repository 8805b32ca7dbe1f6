//! `AuthMiddleware` on its own: every algorithm with real generated keys,
//! every claim rule at its exact boundary (manual clock), and the attacks.

mod support;

use std::sync::Arc;

use aether_gateway::auth::AuthError;
use aether_gateway::auth::keys::{KeySet, SUPPORTED, VerifyKey, parse_jwks};
use aether_gateway::clock::ManualClock;
use aether_gateway::{AuthMiddleware, AuthValidationPolicy};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::jwt::{TestKey, jwks};

const NOW: u64 = 1_800_000_000;

fn policy() -> AuthValidationPolicy {
    AuthValidationPolicy {
        issuer: "aether-auth".into(),
        required_claims: vec!["sub".into(), "role".into()],
    }
}

fn claims() -> Value {
    json!({"iss": "aether-auth", "aud": "aether-api", "sub": "player-7", "role": ["player", "creator"], "iat": NOW, "exp": NOW + 600})
}

fn middleware(keys: &[&TestKey]) -> (AuthMiddleware, Arc<ManualClock>) {
    let clock = ManualClock::new(NOW);
    let set = parse_jwks(jwks(keys).as_bytes(), &SUPPORTED, true).unwrap();
    assert!(set.skipped.is_empty(), "{:?}", set.skipped);
    let mut ks = KeySet::new();
    for k in set.keys {
        ks.push(k);
    }
    let mw = AuthMiddleware::new(policy())
        .with_audiences(["aether-api"])
        .with_clock(clock.clone())
        .with_keys(&ks);
    (mw, clock)
}

fn with(mut base: Value, key: &str, v: Value) -> Value {
    if v.is_null() {
        base.as_object_mut().unwrap().remove(key);
    } else {
        base[key] = v;
    }
    base
}

#[test]
fn every_algorithm_verifies_through_jwks_and_pem() {
    let keys = vec![
        TestKey::rsa(Algorithm::RS256, "rs256"),
        TestKey::rsa(Algorithm::RS384, "rs384"),
        TestKey::rsa(Algorithm::RS512, "rs512"),
        TestKey::rsa(Algorithm::PS256, "ps256"),
        TestKey::rsa(Algorithm::PS384, "ps384"),
        TestKey::rsa(Algorithm::PS512, "ps512"),
        TestKey::ec(Algorithm::ES256, "es256"),
        TestKey::ec(Algorithm::ES384, "es384"),
        TestKey::ed25519("eddsa"),
        TestKey::hmac(Algorithm::HS256, "hs256", 32),
        TestKey::hmac(Algorithm::HS384, "hs384", 48),
        TestKey::hmac(Algorithm::HS512, "hs512", 64),
    ];
    let refs: Vec<&TestKey> = keys.iter().collect();
    let (mw, _) = middleware(&refs);
    for k in &keys {
        let t = mw
            .validate(&k.sign(&claims()))
            .unwrap_or_else(|e| panic!("{:?}: {e}", k.alg));
        assert_eq!(t.subject, "player-7");
        assert_eq!(t.roles, ["player", "creator"]);
        assert_eq!(t.expires_at, NOW + 600);
        // The same key from PEM (asymmetric) or as a raw secret (HMAC).
        let single = match (&k.public_pem, &k.secret) {
            (Some(pem), _) => VerifyKey::pem(pem.as_bytes(), k.alg, None).unwrap(),
            (None, Some(secret)) => VerifyKey::hmac(secret, k.alg, None).unwrap(),
            _ => unreachable!(),
        };
        let clock = ManualClock::new(NOW);
        let mw2 = AuthMiddleware::new(policy())
            .with_clock(clock)
            .with_key(single);
        assert_eq!(
            mw2.validate(&k.sign(&claims())).unwrap().subject,
            "player-7",
            "{:?} via PEM/secret",
            k.alg
        );
    }
    // A signature by another key of the same kind does not verify.
    let other = TestKey::ec(Algorithm::ES256, "es256");
    assert_eq!(
        mw.validate(&other.sign(&claims())),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn alg_none_is_refused_in_any_spelling() {
    let k = TestKey::rsa(Algorithm::RS256, "k1");
    let (mw, _) = middleware(&[&k]);
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": "k1"}).to_string());
        // With an empty signature (the usual attack) and with some bytes.
        assert_eq!(
            mw.validate(&format!("{header}.{body}.")),
            Err(AuthError::Malformed("token has an empty part"))
        );
        assert_eq!(
            mw.validate(&format!("{header}.{body}.AAAA")),
            Err(AuthError::Algorithm),
            "{alg}"
        );
    }
}

#[test]
fn rsa_public_key_as_hmac_secret_is_refused() {
    let k = TestKey::rsa(Algorithm::RS256, "k1");
    let (mw, _) = middleware(&[&k]);
    let pem = k.public_pem.clone().unwrap();
    // The classic confusion: HS256 keyed with the RSA public key's bytes,
    // naming the RSA key's kid (and without kid).
    for header in [
        json!({"alg": "HS256", "kid": "k1"}),
        json!({"alg": "HS256"}),
    ] {
        let forged = support::jwt::hs256_with_secret(pem.as_bytes(), &header, &claims());
        assert_eq!(mw.validate(&forged), Err(AuthError::Algorithm), "{header}");
    }
    // Even when HS256 is the only algorithm allowed, an RSA key never verifies it.
    let mw = AuthMiddleware::new(policy())
        .with_clock(ManualClock::new(NOW))
        .with_algorithms(vec![Algorithm::HS256])
        .with_key(VerifyKey::pem(pem.as_bytes(), Algorithm::RS256, Some("k1".into())).unwrap());
    let forged = support::jwt::hs256_with_secret(
        pem.as_bytes(),
        &json!({"alg": "HS256", "kid": "k1"}),
        &claims(),
    );
    assert_eq!(mw.validate(&forged), Err(AuthError::Algorithm));
}

#[test]
fn only_configured_algorithms_and_the_keys_own_alg() {
    let k = TestKey::rsa(Algorithm::RS256, "k1");
    let clock = ManualClock::new(NOW);
    // RS256 not allowed by config: the JWKS key is dropped and tokens refused.
    let parsed = parse_jwks(jwks(&[&k]).as_bytes(), &[Algorithm::ES256], true).unwrap();
    assert!(parsed.keys.is_empty());
    assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
    let mw = AuthMiddleware::new(policy())
        .with_clock(clock.clone())
        .with_algorithms(vec![Algorithm::ES256])
        .with_key(
            VerifyKey::pem(
                k.public_pem.as_ref().unwrap().as_bytes(),
                Algorithm::RS256,
                None,
            )
            .unwrap(),
        );
    assert_eq!(mw.validate(&k.sign(&claims())), Err(AuthError::Algorithm));
    // The JWK says alg RS256: a PS256 token by the same RSA key is refused.
    let (mw, _) = middleware(&[&k]);
    let mut h = jsonwebtoken::Header::new(Algorithm::PS256);
    h.kid = Some("k1".into());
    let t = jsonwebtoken::encode(&h, &claims(), &k.encoding).unwrap();
    assert_eq!(mw.validate(&t), Err(AuthError::Algorithm));
}

#[test]
fn private_jwks_and_short_hmac_keys_are_refused() {
    // A JWK with its private half ("d") is skipped like a private PEM.
    let k = TestKey::ec(Algorithm::ES256, "k1");
    let mut private = k.jwk.clone();
    private["d"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let doc = json!({"keys": [private]}).to_string();
    let parsed = parse_jwks(doc.as_bytes(), &SUPPORTED, true).unwrap();
    assert!(parsed.keys.is_empty());
    assert_eq!(
        parsed.skipped,
        ["key k1: holds a private key (\"d\"); publish the public key only"]
    );
    // A 32-byte oct key verifies HS256 only; with alg HS512 it is refused.
    let short = json!({"kty": "oct", "kid": "s", "k": URL_SAFE_NO_PAD.encode([7u8; 32])});
    let parsed = parse_jwks(
        json!({"keys": [short]}).to_string().as_bytes(),
        &SUPPORTED,
        true,
    )
    .unwrap();
    assert_eq!(parsed.keys.len(), 1);
    assert_eq!(parsed.keys[0].algorithms, [Algorithm::HS256]);
    let mut short512 = short.clone();
    short512["alg"] = json!("HS512");
    let parsed = parse_jwks(
        json!({"keys": [short512]}).to_string().as_bytes(),
        &SUPPORTED,
        true,
    )
    .unwrap();
    assert!(parsed.keys.is_empty());
    assert_eq!(parsed.skipped.len(), 1, "{:?}", parsed.skipped);
    assert!(
        parsed.skipped[0].contains("32 bytes is too short"),
        "{:?}",
        parsed.skipped
    );
}

#[test]
fn unknown_kid_and_embedded_keys_are_not_trusted() {
    let k = TestKey::ec(Algorithm::ES256, "k1");
    let (mw, _) = middleware(&[&k]);
    let attacker = TestKey::ec(Algorithm::ES256, "k2");
    assert_eq!(
        mw.validate(&attacker.sign(&claims())),
        Err(AuthError::UnknownKey)
    );
    // jwk / jku / x5u in the header name the attacker's key: never followed.
    for extra in [
        json!({"alg": "ES256", "kid": "k1", "jwk": attacker.jwk}),
        json!({"alg": "ES256", "kid": "k1", "jku": "http://127.0.0.1:1/jwks.json"}),
        json!({"alg": "ES256", "kid": "k1", "x5u": "http://127.0.0.1:1/cert.pem"}),
    ] {
        let t = attacker.sign_raw_header(&extra, &claims());
        assert_eq!(mw.validate(&t), Err(AuthError::BadSignature), "{extra}");
    }
    let t = k.sign_raw_header(
        &json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}),
        &claims(),
    );
    assert_eq!(mw.validate(&t), Err(AuthError::Critical));
    // `"crit": null` is not the absence of crit.
    let t = k.sign_raw_header(
        &json!({"alg": "ES256", "kid": "k1", "crit": null}),
        &claims(),
    );
    assert_eq!(mw.validate(&t), Err(AuthError::Critical));
}

#[test]
fn an_unknown_kid_is_unknown_even_beside_keys_without_kid() {
    // A kid-less key is tried for every token; the token's kid is still
    // unknown, which is what makes a JWKS URL refetch (key rotation).
    let known = TestKey::rsa(Algorithm::RS256, "k1");
    let mw = AuthMiddleware::new(policy())
        .with_clock(ManualClock::new(NOW))
        .with_key(
            VerifyKey::pem(
                known.public_pem.as_ref().unwrap().as_bytes(),
                Algorithm::RS256,
                None,
            )
            .unwrap(),
        );
    let rotated = TestKey::rsa(Algorithm::RS256, "k2");
    assert_eq!(
        mw.validate(&rotated.sign(&claims())),
        Err(AuthError::UnknownKey)
    );
    // The kid-less key still verifies its own tokens, whatever their kid.
    assert!(mw.validate(&known.sign(&claims())).is_ok());
}

#[test]
fn expiry_and_leeway_at_the_exact_second() {
    let k = TestKey::hmac(Algorithm::HS256, "k1", 32);
    let (mw, clock) = middleware(&[&k]);
    let t = k.sign(&with(claims(), "exp", json!(NOW)));
    // exp = now: valid; 30 s after: still (leeway); 31 s after: expired.
    assert!(mw.validate(&t).is_ok());
    clock.set(NOW + 30);
    assert!(mw.validate(&t).is_ok());
    clock.set(NOW + 31);
    assert_eq!(mw.validate(&t), Err(AuthError::Expired));
    clock.set(NOW);
    // Not cached past its expiry either: a fresh middleware, same sequence.
    let t2 = k.sign(&with(claims(), "exp", json!(NOW - 31)));
    assert_eq!(mw.validate(&t2), Err(AuthError::Expired));
    let t3 = k.sign(&with(claims(), "exp", json!(NOW - 29)));
    assert!(mw.validate(&t3).is_ok());
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "exp", Value::Null))),
        Err(AuthError::NoExpiry)
    );
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "exp", json!("soon")))),
        Err(AuthError::NoExpiry)
    );
}

#[test]
fn nbf_and_iat_in_the_future() {
    let k = TestKey::hmac(Algorithm::HS256, "k1", 32);
    let (mw, clock) = middleware(&[&k]);
    let nbf = k.sign(&with(claims(), "nbf", json!(NOW + 31)));
    assert_eq!(mw.validate(&nbf), Err(AuthError::NotYetValid));
    assert!(
        mw.validate(&k.sign(&with(claims(), "nbf", json!(NOW + 30))))
            .is_ok()
    );
    clock.set(NOW + 1);
    assert!(mw.validate(&nbf).is_ok());
    clock.set(NOW);
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "iat", json!(NOW + 31)))),
        Err(AuthError::IssuedInFuture)
    );
    assert!(
        mw.validate(&k.sign(&with(claims(), "iat", json!(NOW + 30))))
            .is_ok()
    );
}

#[test]
fn issuer_and_audience() {
    let k = TestKey::hmac(Algorithm::HS256, "k1", 32);
    let (mw, _) = middleware(&[&k]);
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "iss", json!("evil")))),
        Err(AuthError::Issuer)
    );
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "iss", Value::Null))),
        Err(AuthError::Issuer)
    );
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "aud", json!(["other", "another"])))),
        Err(AuthError::Audience)
    );
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "aud", json!("other")))),
        Err(AuthError::Audience)
    );
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "aud", Value::Null))),
        Err(AuthError::Audience)
    );
    assert!(
        mw.validate(&k.sign(&with(claims(), "aud", json!(["other", "aether-api"]))))
            .is_ok()
    );
    assert!(
        mw.validate(&k.sign(&with(claims(), "aud", json!("aether-api"))))
            .is_ok()
    );
}

#[test]
fn required_claims_present_and_non_empty() {
    let k = TestKey::hmac(Algorithm::HS256, "k1", 32);
    let (mw, _) = middleware(&[&k]);
    for (v, ok) in [
        (Value::Null, false),
        (json!(""), false),
        (json!([]), false),
        (json!({}), false),
        (json!("player"), true),
        (json!(["player"]), true),
    ] {
        let r = mw.validate(&k.sign(&with(claims(), "role", v.clone())));
        if ok {
            assert!(r.is_ok(), "{v}");
        } else {
            assert_eq!(r, Err(AuthError::MissingClaim("role".into())), "{v}");
        }
    }
    assert_eq!(
        mw.validate(&k.sign(&with(claims(), "sub", json!("")))),
        Err(AuthError::MissingClaim("sub".into()))
    );
}

#[test]
fn identity_that_cannot_be_forwarded_unchanged_is_refused() {
    let k = TestKey::hmac(Algorithm::HS256, "k1", 32);
    let (mw, _) = middleware(&[&k]);
    for (claim, v, why) in [
        ("sub", json!(7), "sub is not a string"),
        (
            "sub",
            json!("player\u{1}7"),
            "sub cannot be forwarded as a header",
        ),
        (
            "role",
            json!(["player", "admin,creator"]),
            "a role contains a comma",
        ),
        (
            "role",
            json!("line\nbreak"),
            "a role cannot be forwarded as a header",
        ),
        (
            "sub",
            json!(" admin"),
            "sub has leading or trailing whitespace",
        ),
        (
            "sub",
            json!("admin\t"),
            "sub has leading or trailing whitespace",
        ),
        (
            "role",
            json!(["player", " admin"]),
            "a role has leading or trailing whitespace",
        ),
    ] {
        assert_eq!(
            mw.validate(&k.sign(&with(claims(), claim, v.clone()))),
            Err(AuthError::Malformed(why)),
            "{claim} = {v}"
        );
    }
    // Non-ASCII is forwarded byte for byte (UTF-8 in the header value).
    let v = mw
        .verify(&k.sign(&with(claims(), "sub", json!("игрок-7"))))
        .unwrap();
    assert_eq!(
        v.user_header.as_ref().unwrap().as_bytes(),
        "игрок-7".as_bytes()
    );
    assert_eq!(v.roles_header.as_ref().unwrap(), "player,creator");
}

#[test]
fn malformed_tokens_are_refused_cheaply() {
    let k = TestKey::hmac(Algorithm::HS256, "k1", 32);
    let (mw, _) = middleware(&[&k]);
    let good = k.sign(&claims());
    let huge = format!("{}.{}.{}", "a".repeat(50_000), "b".repeat(50_000), "c");
    for (t, why) in [
        (huge.as_str(), "token too long"),
        (&format!("{good}.extra"), "token must have three parts"),
        (&format!("{good}."), "token must have three parts"),
        (&good.replacen('.', "..", 1), "token must have three parts"),
        (&format!(" {good}"), "token is not base64url"),
        (&format!("{good} "), "token is not base64url"),
        (&good.replacen('.', ". ", 1), "token is not base64url"),
        ("", "token must have three parts"),
        ("a.b", "token must have three parts"),
    ] {
        assert_eq!(mw.validate(t), Err(AuthError::Malformed(why)), "{t:.40}");
    }
    // Bad JSON in the payload, correctly signed.
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"k1"}"#),
        URL_SAFE_NO_PAD.encode("not json")
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &k.encoding, Algorithm::HS256).unwrap();
    assert_eq!(
        mw.validate(&format!("{input}.{sig}")),
        Err(AuthError::Malformed("token payload is not a JSON object"))
    );
}

#[test]
fn cached_token_still_expires_and_key_changes_invalidate() {
    let k = TestKey::hmac(Algorithm::HS256, "k1", 32);
    let (mw, clock) = middleware(&[&k]);
    let t = k.sign(&claims());
    assert!(mw.validate(&t).is_ok());
    assert!(mw.validate(&t).is_ok()); // from the cache
    clock.set(NOW + 600 + 31);
    assert_eq!(mw.validate(&t), Err(AuthError::Expired));
}

/// RFC 7515 Appendix A.1 (HS256) and A.2 (RS256) with their published keys.
#[test]
fn rfc7515_appendix_examples() {
    let a1 = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let a2 = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    let doc = json!({"keys": [
        {"kty": "oct", "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"},
        {"kty": "RSA", "e": "AQAB", "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"}
    ]});
    let parsed = parse_jwks(doc.to_string().as_bytes(), &SUPPORTED, true).unwrap();
    assert_eq!(parsed.keys.len(), 2, "{:?}", parsed.skipped);
    let mut set = KeySet::new();
    for k in parsed.keys {
        set.push(k);
    }
    let clock = ManualClock::new(1_300_819_380 - 60);
    let mw = AuthMiddleware::new(AuthValidationPolicy {
        issuer: "joe".into(),
        required_claims: vec!["http://example.com/is_root".into()],
    })
    .with_clock(clock.clone())
    .with_keys(&set);
    assert!(mw.validate(a1).is_ok());
    assert!(mw.validate(a2).is_ok());
    // One flipped signature character and they fail.
    let bad = format!("{}A", &a2[..a2.len() - 1]);
    assert_eq!(mw.validate(&bad), Err(AuthError::BadSignature));
    clock.set(1_300_819_380 + 31);
    assert_eq!(mw.validate(a1), Err(AuthError::Expired));
}
