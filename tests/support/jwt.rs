//! Real keys generated per test run (aws-lc-rs), real signed tokens
//! (jsonwebtoken), and JWKS documents of their public halves.
#![allow(dead_code)]

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A signing key and its public JWK.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub encoding: EncodingKey,
    /// The public JWK (with `kid` and `alg`); for HMAC the secret as `oct`.
    pub jwk: Value,
    /// Public key as PEM (SPKI), for asymmetric keys.
    pub public_pem: Option<String>,
    /// The raw secret, for HMAC keys.
    pub secret: Option<Vec<u8>>,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl TestKey {
    fn finish(alg: Algorithm, kid: &str, encoding: EncodingKey, spki: Option<Vec<u8>>) -> TestKey {
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, alg).expect("public jwk"),
        )
        .unwrap();
        jwk["kid"] = json!(kid);
        TestKey {
            alg,
            kid: Some(kid.to_owned()),
            encoding,
            jwk,
            public_pem: spki.map(|d| pem("PUBLIC KEY", &d)),
            secret: None,
        }
    }

    /// RSA 2048 for RS*/PS*.
    pub fn rsa(alg: Algorithm, kid: &str) -> TestKey {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&kp).unwrap();
        let priv_pem = pem("PRIVATE KEY", pkcs8.as_ref());
        let encoding = EncodingKey::from_rsa_pem(priv_pem.as_bytes()).unwrap();
        use aws_lc_rs::signature::KeyPair;
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(kp.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
        Self::finish(alg, kid, encoding, Some(spki))
    }

    /// EC P-256 (ES256) or P-384 (ES384).
    pub fn ec(alg: Algorithm, kid: &str) -> TestKey {
        let curve = match alg {
            Algorithm::ES256 => &ECDSA_P256_SHA256_FIXED_SIGNING,
            Algorithm::ES384 => &ECDSA_P384_SHA384_FIXED_SIGNING,
            other => panic!("not an EC algorithm: {other:?}"),
        };
        let kp = aws_lc_rs::signature::EcdsaKeyPair::generate(curve).unwrap();
        let pkcs8 = kp.to_pkcs8v1().unwrap();
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        use aws_lc_rs::signature::KeyPair;
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(kp.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
        Self::finish(alg, kid, encoding, Some(spki))
    }

    /// Ed25519 (EdDSA).
    pub fn ed25519(kid: &str) -> TestKey {
        let kp = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
        let pkcs8 = kp.to_pkcs8v1().unwrap();
        let encoding = EncodingKey::from_ed_der(pkcs8.as_ref());
        use aws_lc_rs::signature::KeyPair;
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(kp.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
        Self::finish(Algorithm::EdDSA, kid, encoding, Some(spki))
    }

    /// An HMAC secret of `len` random bytes.
    pub fn hmac(alg: Algorithm, kid: &str, len: usize) -> TestKey {
        let mut secret = vec![0u8; len];
        aws_lc_rs::rand::fill(&mut secret).unwrap();
        let encoding = EncodingKey::from_secret(&secret).unwrap();
        let mut k = Self::finish(alg, kid, encoding, None);
        k.secret = Some(secret);
        k
    }

    /// Sign `claims` with this key, `kid` and `alg` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = self.kid.clone();
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }

    /// Sign with a header of our own making (any JSON, any alg string).
    pub fn sign_raw_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg).unwrap();
        format!("{input}.{sig}")
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass the standard test policy (issuer `aether-auth`,
/// audience `aether-api`, required `sub` and `role`), valid for ten minutes.
pub fn claims(sub: &str, role: Value) -> Value {
    let now = now();
    json!({
        "iss": "aether-auth",
        "aud": "aether-api",
        "sub": sub,
        "role": role,
        "iat": now,
        "exp": now + 600,
    })
}

/// HMAC-sign arbitrary bytes as a token (for hand-made attacks like RS→HS).
pub fn hs256_with_secret(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = EncodingKey::from_secret(secret).unwrap();
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{input}.{sig}")
}
