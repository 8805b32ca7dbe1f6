//! Verification keys: where they come from (JWKS, PEM, HMAC secret) and which
//! algorithm each one may verify.
//!
//! The algorithm is a property of the key, never of the token: every key
//! carries the list of algorithms it may be used with (the JWK's `alg` when it
//! has one, else its family's, always intersected with the configured list),
//! so an HMAC token can never be checked against an RSA public key used as a
//! secret, and `alg: none` has no key at all.

use std::collections::HashSet;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Every algorithm the gateway can verify.
pub const SUPPORTED: [Algorithm; 12] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
];

const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Parse an algorithm name exactly as JOSE spells it (`RS256`, `EdDSA`, …).
///
/// `none` and anything unsupported is `None`.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    SUPPORTED
        .iter()
        .copied()
        .find(|a| algorithm_name(*a) == name)
}

/// The JOSE name of an algorithm.
pub fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
        // Newer algorithms of the crate are not in `SUPPORTED`.
        _ => "unsupported",
    }
}

/// Why key material was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The document is not a JWKS (`{"keys": [...]}`).
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    /// A PEM file could not be read as a public key for the algorithm.
    #[error("not an {alg} public key in PEM form: {reason}")]
    BadPem {
        /// The algorithm the key was configured for.
        alg: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// An HMAC secret shorter than the hash it keys (RFC 7518 §3.2).
    #[error("an {alg} secret must be at least {min} bytes, got {got}")]
    ShortSecret {
        /// The algorithm.
        alg: &'static str,
        /// Minimum length in bytes.
        min: usize,
        /// Length given.
        got: usize,
    },
}

/// Shortest HMAC secret for `alg`: the hash's output length (RFC 7518 §3.2).
fn hmac_min_bytes(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS256 => 32,
        Algorithm::HS384 => 48,
        _ => 64,
    }
}

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// The key id (`kid`), when the source gave one.
    pub kid: Option<String>,
    /// Algorithms this key may verify.
    pub algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material: an HMAC secret must not reach a log.
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// The key for the crypto backend.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }

    /// An HMAC secret for `alg` (an `HS*` algorithm).
    ///
    /// # Errors
    /// [`KeyError::ShortSecret`] when the secret is shorter than the hash.
    pub fn hmac(secret: &[u8], alg: Algorithm, kid: Option<String>) -> Result<Self, KeyError> {
        let min = hmac_min_bytes(alg);
        if secret.len() < min {
            return Err(KeyError::ShortSecret {
                alg: algorithm_name(alg),
                min,
                got: secret.len(),
            });
        }
        Ok(VerifyKey {
            kid,
            algorithms: vec![alg],
            key: DecodingKey::from_secret(secret).map_err(|e| KeyError::BadPem {
                alg: algorithm_name(alg),
                reason: e.to_string(),
            })?,
        })
    }

    /// A PEM public key (SPKI or PKCS#1 for RSA) for `alg`.
    ///
    /// # Errors
    /// [`KeyError::BadPem`] when the PEM is not a public key of the algorithm's family.
    pub fn pem(pem: &[u8], alg: Algorithm, kid: Option<String>) -> Result<Self, KeyError> {
        let bad = |reason: String| KeyError::BadPem {
            alg: algorithm_name(alg),
            reason,
        };
        let key = match alg {
            a if RSA.contains(&a) => DecodingKey::from_rsa_pem(pem),
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            _ => return Err(bad("HMAC keys are secrets, not PEM files".into())),
        }
        .map_err(|e| bad(e.to_string()))?;
        // The PEM decoder accepts private keys too; a gateway only ever needs
        // the public half, and a private key in its config is a mistake.
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY") {
            return Err(bad(
                "this is a private key; give the gateway the public key only".into(),
            ));
        }
        Ok(VerifyKey {
            kid,
            algorithms: vec![alg],
            key,
        })
    }
}

/// A set of verification keys.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// What a JWKS document yielded.
#[derive(Debug, Default)]
pub struct JwksParse {
    /// The usable keys.
    pub keys: Vec<VerifyKey>,
    /// Keys skipped and why (logged by the caller; a set with one odd key
    /// still serves the others).
    pub skipped: Vec<String>,
}

impl KeySet {
    /// An empty set: every token fails with "no key".
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Add a key.
    pub fn push(&mut self, key: VerifyKey) {
        self.keys.push(key);
    }

    /// Add every key of another set.
    pub fn extend(&mut self, other: &KeySet) {
        self.keys.extend(other.keys.iter().cloned());
    }

    /// The keys.
    pub fn keys(&self) -> &[VerifyKey] {
        &self.keys
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys that may verify `alg` and whose `kid` is the token's (a token
    /// without `kid` may use any key, a key without `kid` any token).
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| {
            (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
                && k.algorithms.contains(&alg)
        })
    }

    /// True when some key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Parse a JWKS document.
///
/// Keys are restricted to `allowed` algorithms. Symmetric (`oct`) keys are
/// taken only when `allow_symmetric` (a local file may hold secrets; a
/// published JWKS URL must not).
///
/// # Errors
/// [`KeyError::NotJwks`] when the document is not a JSON object with a `keys` array.
pub fn parse_jwks(
    doc: &[u8],
    allowed: &[Algorithm],
    allow_symmetric: bool,
) -> Result<JwksParse, KeyError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(doc).map_err(|e| KeyError::NotJwks(e.to_string()))?;
    let mut out = JwksParse::default();
    let mut seen: HashSet<String> = HashSet::new();
    for (i, raw) in doc.keys.into_iter().enumerate() {
        // `d` is the private half of an RSA, EC or OKP key (RFC 7518 §6.2.2.1,
        // §6.3.2.1; RFC 8037 §2): a gateway needs the public key only, and a
        // private key in its key set is a leak, as with a private PEM.
        let private =
            raw.get("d").is_some() && raw.get("kty").and_then(|k| k.as_str()) != Some("oct");
        if private {
            let name = raw
                .get("kid")
                .and_then(|k| k.as_str())
                .map_or_else(|| format!("#{i}"), str::to_owned);
            out.skipped.push(format!(
                "key {name}: holds a private key (\"d\"); publish the public key only"
            ));
            continue;
        }
        let jwk: Jwk = match serde_json::from_value(raw) {
            Ok(j) => j,
            Err(e) => {
                out.skipped.push(format!("key {i}: {e}"));
                continue;
            }
        };
        let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
        match jwk_key(&jwk, allowed, allow_symmetric) {
            Ok(key) => {
                if let Some(kid) = &key.kid
                    && !seen.insert(kid.clone())
                {
                    out.skipped.push(format!(
                        "key {name}: a second key with the same kid (the first is used)"
                    ));
                    continue;
                }
                out.keys.push(key);
            }
            Err(reason) => out.skipped.push(format!("key {name}: {reason}")),
        }
    }
    Ok(out)
}

fn jwk_key(jwk: &Jwk, allowed: &[Algorithm], allow_symmetric: bool) -> Result<VerifyKey, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use = enc)".into());
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return Err("unsupported elliptic curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return Err("unsupported OKP curve".into()),
        },
        AlgorithmParameters::OctetKey(_) if !allow_symmetric => {
            return Err("symmetric (oct) keys are accepted from local files only".into());
        }
        AlgorithmParameters::OctetKey(_) => HMAC.to_vec(),
        _ => return Err("unsupported key type".into()),
    };
    // A key's own `alg`, when given, narrows it to that one algorithm.
    let mut algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
        Some(ka) => {
            let name = format!("{ka:?}");
            match parse_algorithm(&name) {
                Some(a) if family.contains(&a) => vec![a],
                Some(_) => return Err(format!("alg {name} does not fit the key type")),
                None => return Err(format!("alg {name} is not a signature algorithm")),
            }
        }
        None => family,
    };
    algorithms.retain(|a| allowed.contains(a));
    if algorithms.is_empty() {
        return Err("none of its algorithms is in [auth] algorithms".into());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    if let AlgorithmParameters::OctetKey(_) = jwk.algorithm {
        // As for secrets from the environment: at least the hash's length
        // (RFC 7518 §3.2), so a 32-byte key may verify HS256 only.
        let len = key.try_get_as_bytes().map_or(0, <[u8]>::len);
        algorithms.retain(|a| hmac_min_bytes(*a) <= len);
        if algorithms.is_empty() {
            return Err(format!(
                "an HMAC secret of {len} bytes is too short for its algorithms (HS256 needs 32, HS384 48, HS512 64)"
            ));
        }
    }
    Ok(VerifyKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

/// Shared, swappable key set: readers never lock.
pub type SharedKeys = Arc<arc_swap::ArcSwap<KeySet>>;
