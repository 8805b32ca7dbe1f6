//! Authentication at the edge: bearer JWTs validated once, so backends can
//! trust the identity the gateway forwards.
//!
//! [`AuthMiddleware`] holds the policy (issuer, audiences, required claims,
//! algorithms, leeway), the keys ([`keys`]: JWKS file or URL, PEM, HMAC
//! secret) and a cache of verified tokens, so a client that sends the same
//! token again costs a hash lookup, not a signature check.

pub mod jwks;
pub(crate) mod jwt;
pub mod keys;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::clock::{Clock, SystemClock};
pub use keys::{KeyError, KeySet, VerifyKey};

/// The identity of a validated bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Token {
    /// The `sub` claim: the user (empty when the token has none).
    pub subject: String,
    /// Roles granted by the token (the roles claim, a string or an array).
    pub roles: Vec<String>,
    /// OAuth scopes (the `scope` claim, space-separated).
    pub scopes: Vec<String>,
    /// The `exp` claim, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// What a token must satisfy: the seed's policy; audiences, algorithms,
/// leeway and keys are set beside it on [`AuthMiddleware`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthValidationPolicy {
    /// `iss` must equal this.
    pub issuer: String,
    /// Claims that must be present and non-empty.
    pub required_claims: Vec<String>,
}

/// Why a token was refused (401), or why none could be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was sent.
    #[error("missing bearer token")]
    Missing,
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("authorization header is not a bearer token")]
    NotBearer,
    /// The token is not a well-formed compact JWS.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is `none`, unknown, or not allowed here.
    #[error("token algorithm not accepted")]
    Algorithm,
    /// The token has a `crit` header parameter.
    #[error("token has critical header extensions")]
    Critical,
    /// The token's `kid` names no key in the set.
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is missing or not a number.
    #[error("token has no valid exp claim")]
    NoExpiry,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` is not the configured issuer.
    #[error("token issuer not accepted")]
    Issuer,
    /// `aud` names none of the configured audiences.
    #[error("token audience not accepted")]
    Audience,
    /// A required claim is missing or empty.
    #[error("token lacks required claim {0}")]
    MissingClaim(String),
    /// No keys have been loaded yet (the JWKS URL has not answered since start).
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl AuthError {
    /// A short, stable name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::NotBearer => "not_bearer",
            AuthError::Malformed(_) => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::Critical => "critical_header",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::NoExpiry => "no_expiry",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::Issuer => "issuer",
            AuthError::Audience => "audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// A verified token with the header values forwarded upstream, built once
/// and shared by every request that presents the same token.
#[derive(Debug)]
pub struct Verified {
    /// The identity.
    pub token: Arc<Token>,
    /// `sub` as a header value (`None` when absent or not a valid header value).
    pub user_header: Option<HeaderValue>,
    /// Roles, comma-separated, as a header value.
    pub roles_header: Option<HeaderValue>,
    /// `sub` as a rate-limit key (`None` when absent), shared, not copied, per request.
    pub user_key: Option<Arc<str>>,
    /// Which key set this was verified against.
    generation: u64,
}

/// Validates bearer tokens against a policy and a key set.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let secret = b"a-test-secret-of-at-least-32-bytes!!";
/// # let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 600;
/// # let token = jsonwebtoken::encode(
/// #     &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
/// #     &serde_json::json!({"iss": "aether-auth", "sub": "player-1", "role": "player", "exp": exp}),
/// #     &jsonwebtoken::EncodingKey::from_secret(secret)?,
/// # )?;
/// use aether_gateway::{AuthMiddleware, AuthValidationPolicy, Token};
/// let auth = AuthMiddleware::new(AuthValidationPolicy {
///     issuer: "aether-auth".into(),
///     required_claims: vec!["sub".into(), "role".into()],
/// });
/// # let auth = auth.with_key(aether_gateway::auth::VerifyKey::hmac(secret, jsonwebtoken::Algorithm::HS256, None)?);
/// let result = auth.validate(&token)?;
/// # let _: Token = result.clone();
/// assert_eq!(result.subject, "player-1");
/// assert_eq!(result.roles, ["player"]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AuthMiddleware {
    policy: AuthValidationPolicy,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    max_token_bytes: usize,
    roles_claim: String,
    keys: keys::SharedKeys,
    /// Bumped whenever the key set changes, so cached verdicts of removed
    /// keys are not served.
    generation: Arc<AtomicU64>,
    remote: Option<Arc<jwks::RemoteJwks>>,
    cache: quick_cache::sync::Cache<Box<str>, Arc<Verified>>,
    clock: Arc<dyn Clock>,
}

/// Default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Default cap on a token's length.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default number of verified tokens kept.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;
/// A token without `kid` is tried against at most this many keys, so an
/// attacker cannot make one request cost a signature check per key.
const MAX_KEYS_WITHOUT_KID: usize = 4;

impl AuthMiddleware {
    /// A middleware with no keys (every token fails until keys are added),
    /// no audience check, every supported algorithm, 30 s leeway.
    pub fn new(policy: AuthValidationPolicy) -> Self {
        AuthMiddleware {
            policy,
            audiences: Vec::new(),
            algorithms: keys::SUPPORTED.to_vec(),
            leeway: DEFAULT_LEEWAY_SECONDS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            roles_claim: "role".to_owned(),
            keys: Arc::new(arc_swap::ArcSwap::from_pointee(KeySet::new())),
            generation: Arc::new(AtomicU64::new(0)),
            remote: None,
            cache: quick_cache::sync::Cache::new(DEFAULT_CACHE_SIZE),
            clock: Arc::new(SystemClock),
        }
    }

    /// Accept only tokens whose `aud` (string or array) names one of these.
    #[must_use]
    pub fn with_audiences<I: IntoIterator<Item = S>, S: Into<String>>(mut self, aud: I) -> Self {
        self.audiences = aud.into_iter().map(Into::into).collect();
        self
    }

    /// Accept only these algorithms (keys are narrowed to them too).
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: Vec<Algorithm>) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// Clock-skew allowance for `exp`, `nbf` and `iat`.
    #[must_use]
    pub fn with_leeway_seconds(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    /// Longest token accepted, in bytes.
    #[must_use]
    pub fn with_max_token_bytes(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// The claim holding roles (default `role`).
    #[must_use]
    pub fn with_roles_claim(mut self, claim: impl Into<String>) -> Self {
        self.roles_claim = claim.into();
        self
    }

    /// How many verified tokens to keep.
    #[must_use]
    pub fn with_cache_size(mut self, entries: usize) -> Self {
        self.cache = quick_cache::sync::Cache::new(entries.max(1));
        self
    }

    /// The clock used for `exp`, `nbf` and `iat`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Add one static key.
    #[must_use]
    pub fn with_key(self, key: VerifyKey) -> Self {
        let mut set = KeySet::clone(&self.keys.load());
        set.push(key);
        self.set_static_keys(set);
        self
    }

    /// Add every key of a set.
    #[must_use]
    pub fn with_keys(self, keys: &KeySet) -> Self {
        let mut set = KeySet::clone(&self.keys.load());
        set.extend(keys);
        self.set_static_keys(set);
        self
    }

    /// Also take keys from a JWKS URL, refreshed in the background (see
    /// [`jwks::RemoteJwks`]); the static keys stay in the set beside them.
    #[must_use]
    pub fn with_remote_jwks(mut self, config: jwks::RemoteConfig) -> Self {
        let statics = KeySet::clone(&self.keys.load());
        self.remote = Some(Arc::new(jwks::RemoteJwks::new(
            config,
            statics,
            self.algorithms.clone(),
            Arc::clone(&self.keys),
            Arc::clone(&self.generation),
        )));
        self
    }

    fn set_static_keys(&self, set: KeySet) {
        self.keys.store(Arc::new(set));
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The remote JWKS source, if any: its refresh task is started by the runtime.
    pub fn remote(&self) -> Option<&Arc<jwks::RemoteJwks>> {
        self.remote.as_ref()
    }

    /// The policy.
    pub fn policy(&self) -> &AuthValidationPolicy {
        &self.policy
    }

    /// Number of keys currently loaded.
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// Validate a raw token (without the `Bearer ` prefix) against the keys
    /// loaded now.
    ///
    /// # Errors
    /// The [`AuthError`] saying why the token is refused.
    pub fn validate(&self, token: &str) -> Result<Token, AuthError> {
        self.verify(token).map(|v| Token::clone(&v.token))
    }

    /// Validate without consulting or filling the cache: every call pays
    /// for parsing, the signature and the claims (benchmarks, one-off checks).
    ///
    /// # Errors
    /// The [`AuthError`] saying why the token is refused.
    pub fn validate_uncached(&self, token: &str) -> Result<Token, AuthError> {
        let now = self.clock.unix_seconds();
        let generation = self.generation.load(Ordering::Relaxed);
        self.verify_uncached(token, now, generation)
            .map(|v| Token::clone(&v.token))
    }

    /// Validate a token; on an unknown `kid`, refetch the remote JWKS once
    /// (rate-limited, shared by concurrent callers) and try again.
    ///
    /// # Errors
    /// The [`AuthError`] saying why the token is refused.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Verified>, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKey | AuthError::KeysUnavailable) if self.remote.is_some() => {
                let remote = self.remote.as_ref().expect("checked above");
                // Whether or not this call fetched, a concurrent one may have.
                remote.refetch_for_unknown_key().await;
                self.verify(token)
            }
            other => other,
        }
    }

    /// The synchronous core: cache, then parse, key, signature, claims.
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, AuthError> {
        let now = self.clock.unix_seconds();
        let generation = self.generation.load(Ordering::Relaxed);
        if let Some(v) = self.cache.get(token) {
            if v.generation == generation && now <= v.token.expires_at.saturating_add(self.leeway) {
                return Ok(v);
            }
            self.cache.remove(token);
        }
        let verified = Arc::new(self.verify_uncached(token, now, generation)?);
        self.cache.insert(token.into(), Arc::clone(&verified));
        Ok(verified)
    }

    fn verify_uncached(
        &self,
        token: &str,
        now: u64,
        generation: u64,
    ) -> Result<Verified, AuthError> {
        let parsed = jwt::parse(token, self.max_token_bytes)?;
        if parsed.header.crit.is_some() {
            return Err(AuthError::Critical);
        }
        let alg = keys::parse_algorithm(&parsed.header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(AuthError::Algorithm)?;
        let set = self.keys.load();
        if set.is_empty() {
            return Err(AuthError::KeysUnavailable);
        }
        let kid = parsed.header.kid.as_deref();
        let mut tried = 0;
        let mut verified = false;
        for key in set.candidates(kid, alg).take(MAX_KEYS_WITHOUT_KID) {
            tried += 1;
            // Any error from the backend (bad signature encoding, key and
            // algorithm of different families) is a failed verification.
            if jsonwebtoken::crypto::verify(
                parsed.signature_b64,
                parsed.signing_input.as_bytes(),
                key.decoding_key(),
                alg,
            )
            .unwrap_or(false)
            {
                verified = true;
                break;
            }
        }
        if !verified {
            return Err(match kid {
                // Kid-less keys may have been tried and failed: the kid is
                // still unknown, and a refetch may bring its key.
                Some(k) if !set.has_kid(k) => AuthError::UnknownKey,
                // A known kid whose key may not verify this alg: key confusion.
                Some(_) if tried == 0 => AuthError::Algorithm,
                None if tried == 0 => AuthError::Algorithm,
                _ => AuthError::BadSignature,
            });
        }
        let claims = jwt::claims(parsed.payload_b64)?;
        self.check_claims(&claims, now)?;
        let token = Token {
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            roles: strings(claims.get(&self.roles_claim)),
            scopes: claims
                .get("scope")
                .and_then(Value::as_str)
                .map(|s| s.split_ascii_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            expires_at: numeric_date(claims.get("exp")).ok_or(AuthError::NoExpiry)?,
        };
        // What is forwarded must mean upstream exactly what the token said:
        // a `sub` or role that cannot travel as a header value unchanged (a
        // control character; a comma inside one role of the comma-separated
        // list) refuses the token instead of forwarding less or more.
        let user_header = match token.subject.as_str() {
            "" => None,
            s => Some(
                HeaderValue::from_bytes(s.as_bytes())
                    .map_err(|_| AuthError::Malformed("sub cannot be forwarded as a header"))?,
            ),
        };
        // Parsers trim a header value's ends and list parsers trim around
        // commas: " admin" would arrive as "admin".
        let padded = |s: &str| s.starts_with([' ', '\t']) || s.ends_with([' ', '\t']);
        if padded(&token.subject) {
            return Err(AuthError::Malformed(
                "sub has leading or trailing whitespace",
            ));
        }
        if token.roles.iter().any(|r| r.contains(',')) {
            return Err(AuthError::Malformed("a role contains a comma"));
        }
        if token.roles.iter().any(|r| padded(r)) {
            return Err(AuthError::Malformed(
                "a role has leading or trailing whitespace",
            ));
        }
        let roles_header = match token.roles.as_slice() {
            [] => None,
            roles => Some(
                HeaderValue::from_bytes(roles.join(",").as_bytes())
                    .map_err(|_| AuthError::Malformed("a role cannot be forwarded as a header"))?,
            ),
        };
        let user_key = (!token.subject.is_empty()).then(|| Arc::from(token.subject.as_str()));
        Ok(Verified {
            token: Arc::new(token),
            user_header,
            roles_header,
            user_key,
            generation,
        })
    }

    fn check_claims(
        &self,
        claims: &serde_json::Map<String, Value>,
        now: u64,
    ) -> Result<(), AuthError> {
        let exp = numeric_date(claims.get("exp")).ok_or(AuthError::NoExpiry)?;
        if now > exp.saturating_add(self.leeway) {
            return Err(AuthError::Expired);
        }
        let early = now.saturating_add(self.leeway);
        for (name, err) in [
            ("nbf", AuthError::NotYetValid),
            ("iat", AuthError::IssuedInFuture),
        ] {
            match claims.get(name) {
                None => {}
                Some(v) => match numeric_date(Some(v)) {
                    Some(t) if t <= early => {}
                    Some(_) => return Err(err),
                    None => return Err(AuthError::Malformed("nbf/iat is not a NumericDate")),
                },
            }
        }
        // RFC 7519 §4.1.2: `sub` is a string; a number would be forwarded as
        // no user at all.
        if claims.get("sub").is_some_and(|s| !s.is_string()) {
            return Err(AuthError::Malformed("sub is not a string"));
        }
        if claims.get("iss").and_then(Value::as_str) != Some(self.policy.issuer.as_str()) {
            return Err(AuthError::Issuer);
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.audiences.iter().any(|x| x == a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audiences.iter().any(|x| x == a)),
                _ => false,
            };
            if !ok {
                return Err(AuthError::Audience);
            }
        }
        for name in &self.policy.required_claims {
            let present = match claims.get(name) {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !s.is_empty(),
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(o)) => !o.is_empty(),
                Some(Value::Bool(_) | Value::Number(_)) => true,
            };
            if !present {
                return Err(AuthError::MissingClaim(name.clone()));
            }
        }
        Ok(())
    }
}

/// A NumericDate (RFC 7519 §2): a non-negative JSON number, fractions cut.
fn numeric_date(v: Option<&Value>) -> Option<u64> {
    let n = v?.as_number()?;
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
            .map(|f| f as u64)
    })
}

/// A claim that is a string or an array of strings.
fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// No token needed; none is validated (identity headers are still stripped).
    Public,
    /// A valid token is required (the default when `[auth]` is configured).
    #[default]
    Required,
    /// A token is validated when sent (401 if invalid); anonymous otherwise.
    Optional,
}

/// A route's authorization requirements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteAuth {
    /// Whether a token is needed.
    pub mode: AuthMode,
    /// The token must carry one of these roles (empty: any).
    pub roles: Vec<String>,
    /// The token must carry all of these scopes.
    pub scopes: Vec<String>,
    /// Keep the client's `Authorization` header when forwarding.
    pub forward_authorization: bool,
}

impl RouteAuth {
    /// True when `token` satisfies the role and scope requirements.
    pub fn permits(&self, token: &Token) -> bool {
        (self.roles.is_empty() || self.roles.iter().any(|r| token.roles.contains(r)))
            && self.scopes.iter().all(|s| token.scopes.contains(s))
    }
}

/// The token of an `Authorization: Bearer <token>` header.
///
/// # Errors
/// [`AuthError::Missing`] without the header, [`AuthError::NotBearer`] for
/// another scheme, several headers or a value that is not visible ASCII.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Err(AuthError::Missing);
    };
    if all.next().is_some() {
        return Err(AuthError::NotBearer);
    }
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}
