//! Rate limiting at the edge: per route, per user, per IP, per API key, on
//! one gateway or shared by a fleet through Redis.
//!
//! - [`gcra`]: the arithmetic (GCRA: smooth, burst-capped, no window edges).
//! - [`RateLimiter`]: one policy over many keys, in process (the seed's type).
//! - [`Rule`]: a configured limit: its policy, which key it counts by
//!   ([`KeySpec`]) and where its counters live (local, or Redis with a
//!   fallback).
//!
//! ```
//! use aether_gateway::{RateLimiter, RateLimitPolicy, RateLimitStatus};
//! let limiter = RateLimiter::new(RateLimitPolicy {
//!     window_seconds: 60,
//!     max_requests: 100,
//! });
//! let client_id = "player-7";
//! let status: RateLimitStatus = limiter.check(client_id);
//! assert!(status.allowed);
//! assert_eq!(status.remaining, 99);
//! ```

pub mod gcra;
mod local;
pub mod redis;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::clock::{Clock, SystemClock};
pub use gcra::Gcra;
pub use local::DEFAULT_MAX_KEYS;
use local::LocalStore;

/// How many requests a key may make per window (the seed's policy). The
/// burst defaults to `max_requests`; see [`RateLimiter::with_burst`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Length of the window in seconds.
    pub window_seconds: u64,
    /// Requests allowed per window, sustained.
    pub max_requests: u32,
}

/// The verdict on one request, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// The request may proceed.
    pub allowed: bool,
    /// Requests per window (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests that would still be allowed right now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Until the key's allowance is whole again (`RateLimit-Reset`).
    pub reset_after: Duration,
    /// Until the next request is allowed; zero while `remaining > 0`
    /// (`Retry-After` on a 429).
    pub retry_after: Duration,
}

impl RateLimitStatus {
    fn from_outcome(g: &Gcra, o: gcra::Outcome) -> Self {
        RateLimitStatus {
            allowed: o.allowed,
            limit: g.reported_limit(),
            remaining: o.remaining,
            reset_after: Duration::from_nanos(o.reset_after_ns),
            retry_after: Duration::from_nanos(o.retry_after_ns),
        }
    }

    /// A status for a request let through without counting (Redis down and
    /// `on_backend_error = "allow"`).
    pub fn unlimited(g: &Gcra) -> Self {
        RateLimitStatus {
            allowed: true,
            limit: g.reported_limit(),
            remaining: g.burst,
            reset_after: Duration::ZERO,
            retry_after: Duration::ZERO,
        }
    }

    /// A refusal without counting (Redis down and `on_backend_error = "deny"`).
    pub fn refused(g: &Gcra) -> Self {
        let interval = Duration::from_nanos(g.interval_ns);
        RateLimitStatus {
            allowed: false,
            limit: g.reported_limit(),
            remaining: 0,
            reset_after: interval,
            retry_after: interval,
        }
    }

    /// `Retry-After` in whole seconds, rounded up.
    pub fn retry_after_seconds(&self) -> u64 {
        gcra::ceil_seconds(u64::try_from(self.retry_after.as_nanos()).unwrap_or(u64::MAX))
    }

    /// `RateLimit-Reset` in whole seconds, rounded up.
    pub fn reset_seconds(&self) -> u64 {
        gcra::ceil_seconds(u64::try_from(self.reset_after.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The more telling of two statuses of one request: a refusal over an
    /// allowance, then the one with less left.
    pub fn tighter(self, other: RateLimitStatus) -> RateLimitStatus {
        let key = |s: &RateLimitStatus| (s.allowed, s.remaining, std::cmp::Reverse(s.reset_after));
        if key(&other) < key(&self) {
            other
        } else {
            self
        }
    }
}

/// What a counter is kept for: one client, user, API key or a combination.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A client address (as resolved through `trusted_proxies`).
    Ip(IpAddr),
    /// A validated token's `sub`.
    User(Arc<str>),
    /// The value of a header (an API key).
    Header(HeaderValue),
    /// One counter for the whole rule (a route's or a bucket's own limit),
    /// or, for a rule on every route, one per route (its name).
    Route(Option<Arc<str>>),
    /// A name given by a library caller.
    Name(Arc<str>),
    /// Several parts, all of which must match.
    Combined(Arc<[LimitKey]>),
}

impl From<&str> for LimitKey {
    fn from(s: &str) -> Self {
        LimitKey::Name(s.into())
    }
}

impl From<String> for LimitKey {
    fn from(s: String) -> Self {
        LimitKey::Name(s.into())
    }
}

impl From<IpAddr> for LimitKey {
    fn from(ip: IpAddr) -> Self {
        LimitKey::Ip(ip)
    }
}

impl LimitKey {
    /// Bytes that name this key in a shared store: a tag per kind, so a user
    /// called `1.2.3.4` never shares a counter with the address 1.2.3.4.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        match self {
            LimitKey::Ip(ip) => {
                let _ = write!(out, "i:{ip}");
            }
            LimitKey::User(u) if u.len() <= MAX_PLAIN_KEY_BYTES => {
                out.extend_from_slice(b"u:");
                escape(u.as_bytes(), out);
            }
            LimitKey::User(u) => digest(b"u#", u.as_bytes(), out),
            // Header values are API keys: secrets, and as long as a client
            // likes. Redis gets a digest, never the value.
            LimitKey::Header(v) => digest(b"h#", v.as_bytes(), out),
            LimitKey::Route(None) => out.extend_from_slice(b"r"),
            LimitKey::Route(Some(name)) => {
                out.extend_from_slice(b"r:");
                escape(name.as_bytes(), out);
            }
            LimitKey::Name(n) if n.len() <= MAX_PLAIN_KEY_BYTES => {
                out.extend_from_slice(b"n:");
                escape(n.as_bytes(), out);
            }
            LimitKey::Name(n) => digest(b"n#", n.as_bytes(), out),
            LimitKey::Combined(parts) => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        out.push(b'|');
                    }
                    p.write_to(out);
                }
            }
        }
    }
}

/// Longer users or names are stored in Redis as a digest.
const MAX_PLAIN_KEY_BYTES: usize = 128;

/// `tag` and the first 128 bits of SHA-256 of `v`, hex: the same on every
/// gateway, fixed-size, and not reversible to the value.
fn digest(tag: &[u8], v: &[u8], out: &mut Vec<u8>) {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v);
    out.extend_from_slice(tag);
    for b in &d.as_ref()[..16] {
        out.extend_from_slice(format!("{b:02x}").as_bytes());
    }
}

/// A header's value as a key. Several lines of the header count as their
/// whole list (an upstream may read any of them), so `k1` then `k2` is not
/// the key `k1`; an empty value is no value.
fn header_key(headers: &http::HeaderMap, name: &HeaderName) -> Option<LimitKey> {
    let mut all = headers.get_all(name).iter().filter(|v| !v.is_empty());
    let first = all.next()?;
    let Some(second) = all.next() else {
        return Some(LimitKey::Header(first.clone()));
    };
    let mut joined = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(all) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok().map(LimitKey::Header)
}

/// `|`, `:`, `\`, braces and control bytes escaped, so parts and names cannot
/// run into each other and a value cannot open a Redis Cluster hash tag.
fn escape(v: &[u8], out: &mut Vec<u8>) {
    for &b in v {
        match b {
            b'|' | b':' | b'\\' | b'{' | b'}' | 0..=0x1f | 0x7f => {
                out.push(b'\\');
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
            _ => out.push(b),
        }
    }
}

/// Why a limit could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// Zero window, zero requests, zero burst, or more requests than
    /// nanoseconds in the window.
    #[error(
        "a limit needs a window of at least 1 s, at least one request and a burst of at least 1, and at most one request per nanosecond"
    )]
    InvalidPolicy,
    /// A `key` that is not `user`, `ip`, `route`, `header:<name>` or a `+` of them.
    #[error("{0}")]
    InvalidKey(String),
}

/// One policy over many keys, counted in this process.
#[derive(Debug)]
pub struct RateLimiter {
    policy: RateLimitPolicy,
    gcra: Gcra,
    store: LocalStore,
}

impl RateLimiter {
    /// A limiter whose burst is `max_requests`.
    ///
    /// # Panics
    /// When the policy is invalid (zero window or requests); config-driven
    /// callers use [`RateLimiter::try_new`].
    pub fn new(policy: RateLimitPolicy) -> Self {
        Self::try_new(policy, policy.max_requests).expect("a valid rate-limit policy")
    }

    /// A limiter with an explicit burst.
    ///
    /// # Errors
    /// [`RateLimitError::InvalidPolicy`] for a zero window, requests or burst.
    pub fn try_new(policy: RateLimitPolicy, burst: u32) -> Result<Self, RateLimitError> {
        Self::build(policy, burst, DEFAULT_MAX_KEYS, Arc::new(SystemClock))
    }

    fn build(
        policy: RateLimitPolicy,
        burst: u32,
        max_keys: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, RateLimitError> {
        if policy.window_seconds == 0 {
            return Err(RateLimitError::InvalidPolicy);
        }
        let gcra = Gcra::new(
            Duration::from_secs(policy.window_seconds),
            policy.max_requests,
            burst,
        )
        .ok_or(RateLimitError::InvalidPolicy)?;
        Ok(RateLimiter {
            policy,
            gcra,
            store: LocalStore::new(max_keys, clock),
        })
    }

    /// The same limiter with another burst (most requests let through at once).
    ///
    /// # Errors
    /// [`RateLimitError::InvalidPolicy`] for a burst of 0.
    pub fn with_burst(self, burst: u32) -> Result<Self, RateLimitError> {
        Self::build(
            self.policy,
            burst,
            self.store.max_keys(),
            self.store.clock(),
        )
    }

    /// The same limiter on another clock (tests). Counts so far are dropped.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self::build(self.policy, self.gcra.burst, self.store.max_keys(), clock)
            .expect("parameters were valid already")
    }

    /// The same limiter holding at most `max_keys` keys; requests of further
    /// keys share one overflow counter until idle keys are swept. Counts so
    /// far are dropped.
    pub fn with_max_keys(self, max_keys: usize) -> Self {
        Self::build(self.policy, self.gcra.burst, max_keys, self.store.clock())
            .expect("parameters were valid already")
    }

    /// The policy.
    pub fn policy(&self) -> RateLimitPolicy {
        self.policy
    }

    /// The arithmetic parameters.
    pub fn gcra(&self) -> &Gcra {
        &self.gcra
    }

    /// Count one request of `key` and say whether it may proceed.
    pub fn check(&self, key: impl Into<LimitKey>) -> RateLimitStatus {
        self.check_key(&key.into())
    }

    /// [`RateLimiter::check`] for a key already built (the request path).
    pub fn check_key(&self, key: &LimitKey) -> RateLimitStatus {
        RateLimitStatus::from_outcome(&self.gcra, self.store.check(&self.gcra, key))
    }

    /// Forget keys whose allowance is whole again; returns the keys left.
    pub fn sweep(&self) -> usize {
        self.store.sweep()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One part of a rule's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The token's `sub` (the client IP for anonymous requests).
    User,
    /// The client IP.
    Ip,
    /// The route (one counter for the route; per route for a global rule).
    Route,
    /// A request header's value (the client IP when absent).
    Header(HeaderName),
}

/// What a rule counts by: `user`, `ip`, `route`, `header:<name>`, or
/// several joined with `+` (`user+ip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    parts: Vec<KeyPart>,
}

/// What the pipeline knows about a request when it builds keys.
#[derive(Debug, Clone, Copy)]
pub struct KeyInputs<'a> {
    /// The validated `sub`, if any.
    pub user: Option<&'a Arc<str>>,
    /// The resolved client address.
    pub ip: IpAddr,
    /// The request headers.
    pub headers: &'a http::HeaderMap,
    /// The matched route's name (`GET,PUT /api/v1/worlds/{world_id}`).
    pub route: &'a Arc<str>,
}

impl KeySpec {
    /// Parse `user`, `ip`, `route`, `header:x-api-key`, `user+ip`, ….
    ///
    /// # Errors
    /// [`RateLimitError::InvalidKey`] naming what is wrong.
    pub fn parse(s: &str) -> Result<KeySpec, RateLimitError> {
        let mut parts = Vec::new();
        for p in s.split('+') {
            let part = match p.trim() {
                "user" => KeyPart::User,
                "ip" => KeyPart::Ip,
                "route" => KeyPart::Route,
                other => match other.strip_prefix("header:") {
                    Some(h) => {
                        KeyPart::Header(HeaderName::from_bytes(h.trim().as_bytes()).map_err(
                            |_| RateLimitError::InvalidKey(format!("{h:?} is not a header name")),
                        )?)
                    }
                    None => {
                        return Err(RateLimitError::InvalidKey(format!(
                            "unknown key {other:?} (one of user, ip, route, header:<name>, or several joined with +)"
                        )));
                    }
                },
            };
            if parts.contains(&part) {
                return Err(RateLimitError::InvalidKey(format!("{p:?} appears twice")));
            }
            parts.push(part);
        }
        Ok(KeySpec { parts })
    }

    /// The parts.
    pub fn parts(&self) -> &[KeyPart] {
        &self.parts
    }

    /// The key of one request. A part the request lacks (no user, no header)
    /// counts by the client IP instead: never one shared empty-name bucket.
    /// `per_route`: the rule applies to every route, so `route` names the
    /// matched one (else it is the rule's own single counter).
    pub fn key(&self, inputs: &KeyInputs<'_>, per_route: bool) -> LimitKey {
        let one = |p: &KeyPart| match p {
            KeyPart::User => inputs
                .user
                .filter(|u| !u.is_empty())
                .map_or(LimitKey::Ip(inputs.ip), |u| LimitKey::User(Arc::clone(u))),
            KeyPart::Ip => LimitKey::Ip(inputs.ip),
            KeyPart::Route => LimitKey::Route(per_route.then(|| Arc::clone(inputs.route))),
            KeyPart::Header(h) => header_key(inputs.headers, h).unwrap_or(LimitKey::Ip(inputs.ip)),
        };
        match self.parts.as_slice() {
            [p] => one(p),
            parts => LimitKey::Combined(parts.iter().map(one).collect()),
        }
    }
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            match p {
                KeyPart::User => f.write_str("user")?,
                KeyPart::Ip => f.write_str("ip")?,
                KeyPart::Route => f.write_str("route")?,
                KeyPart::Header(h) => write!(f, "header:{h}")?,
            }
        }
        Ok(())
    }
}

/// A rule shared by the routes (and the sweeper) that use it; two are equal
/// when they are the same rule.
#[derive(Debug, Clone)]
pub struct SharedRule(pub Arc<Rule>);

impl PartialEq for SharedRule {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedRule {}

impl std::ops::Deref for SharedRule {
    type Target = Rule;
    fn deref(&self) -> &Rule {
        &self.0
    }
}

/// A configured limit: a name, a policy, what it counts by, where.
#[derive(Debug)]
pub struct Rule {
    /// The rule's name (route rules: the route, or its shared `bucket`).
    pub name: Arc<str>,
    /// What requests are counted by.
    pub key: KeySpec,
    local: RateLimiter,
    shared: Option<Arc<redis::RedisBackend>>,
    /// A rule on every route (`[[rate_limit.rules]]`): `key = "route"` then
    /// counts per route.
    global: bool,
}

impl Rule {
    /// A rule counted in this process.
    pub fn local(name: impl Into<Arc<str>>, key: KeySpec, limiter: RateLimiter) -> Self {
        Rule {
            name: name.into(),
            key,
            local: limiter,
            shared: None,
            global: false,
        }
    }

    /// The same rule as one applied to every route.
    pub fn on_every_route(mut self) -> Self {
        self.global = true;
        self
    }

    /// The same rule counted in Redis, `limiter` as its fallback.
    pub fn shared(mut self, backend: Arc<redis::RedisBackend>) -> Self {
        self.shared = Some(backend);
        self
    }

    /// The in-process limiter (the only one, or the fallback).
    pub fn local_limiter(&self) -> &RateLimiter {
        &self.local
    }

    /// Count one request.
    pub async fn check(&self, inputs: &KeyInputs<'_>) -> RateLimitStatus {
        let key = self.key.key(inputs, self.global);
        match &self.shared {
            None => self.local.check_key(&key),
            Some(redis) => redis.check(self, &key).await,
        }
    }
}

/// Response header names of the IETF draft (`RateLimit-*`).
pub mod header_names {
    use http::HeaderName;
    /// `RateLimit-Limit`.
    pub const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    /// `RateLimit-Remaining`.
    pub const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    /// `RateLimit-Reset`.
    pub const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
    /// `X-RateLimit-Limit`.
    pub const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    /// `X-RateLimit-Remaining`.
    pub const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    /// `X-RateLimit-Reset`.
    pub const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
}

/// A header value for a number: small ones from a table made once (a
/// shared clone, no allocation per response), others formatted.
fn number(n: u64) -> HeaderValue {
    static SMALL: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let table = SMALL.get_or_init(|| (0..=1024u64).map(HeaderValue::from).collect());
    usize::try_from(n)
        .ok()
        .and_then(|i| table.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// Write the `RateLimit-*` (and optionally `X-RateLimit-*`) headers of `s`.
pub fn write_headers(s: &RateLimitStatus, legacy: bool, h: &mut http::HeaderMap) {
    use header_names::*;
    let values = [
        number(u64::from(s.limit)),
        number(u64::from(s.remaining)),
        number(s.reset_seconds()),
    ];
    for (name, v) in [LIMIT, REMAINING, RESET].into_iter().zip(values.iter()) {
        h.insert(name, v.clone());
    }
    if legacy {
        for (name, v) in [X_LIMIT, X_REMAINING, X_RESET].into_iter().zip(values) {
            h.insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter(per_min: u32, burst: u32) -> (RateLimiter, Arc<ManualClock>) {
        let clock = ManualClock::new(1_000);
        let l = RateLimiter::try_new(
            RateLimitPolicy {
                window_seconds: 60,
                max_requests: per_min,
            },
            burst,
        )
        .unwrap()
        .with_clock(clock.clone());
        (l, clock)
    }

    #[test]
    fn keys_never_share_a_counter() {
        let (l, _) = limiter(60, 1);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.check(ip).allowed);
        assert!(!l.check(ip).allowed);
        // A user named like the address is another key.
        assert!(l.check_key(&LimitKey::User("192.0.2.1".into())).allowed);
        assert!(l.check("192.0.2.1").allowed);
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn retry_after_and_reset_round_up() {
        let (l, clock) = limiter(60, 2);
        let a = l.check("k");
        assert_eq!((a.allowed, a.remaining, a.reset_seconds()), (true, 1, 1));
        let b = l.check("k");
        assert_eq!((b.allowed, b.remaining, b.reset_seconds()), (true, 0, 2));
        clock.advance_by(Duration::from_millis(300));
        let c = l.check("k");
        assert!(!c.allowed);
        // Next allowed 700 ms from now: Retry-After 1; full again in 1.7 s: 2.
        assert_eq!(c.retry_after, Duration::from_millis(700));
        assert_eq!((c.retry_after_seconds(), c.reset_seconds()), (1, 2));
        clock.advance_by(Duration::from_millis(700));
        assert!(l.check("k").allowed);
    }

    #[test]
    fn remaining_may_exceed_the_window_limit_when_the_burst_does() {
        // 1 a minute, 10 at once: Limit reports the burst, Remaining counts it down.
        let (l, _) = limiter(1, 10);
        let s = l.check("k");
        assert_eq!((s.limit, s.remaining), (10, 9));
    }

    #[test]
    fn several_header_lines_are_one_key_of_all_of_them() {
        let name = HeaderName::from_static("x-api-key");
        let mut h = http::HeaderMap::new();
        h.append("x-api-key", HeaderValue::from_static("k1"));
        let one = header_key(&h, &name).unwrap();
        h.append("x-api-key", HeaderValue::from_static("k2"));
        let two = header_key(&h, &name).unwrap();
        assert_eq!(one, LimitKey::Header(HeaderValue::from_static("k1")));
        assert_eq!(two, LimitKey::Header(HeaderValue::from_static("k1, k2")));
        let mut empty = http::HeaderMap::new();
        empty.append("x-api-key", HeaderValue::from_static(""));
        assert_eq!(header_key(&empty, &name), None);
    }

    #[test]
    fn idle_keys_are_swept_and_the_cap_holds() {
        let (l, clock) = limiter(60, 5);
        let l = l.with_max_keys(3);
        for k in ["a", "b", "c"] {
            assert!(l.check(k).allowed);
        }
        // Full: further keys share one overflow counter (burst 5).
        let overflow: Vec<bool> = (0..6).map(|i| l.check(format!("x{i}")).allowed).collect();
        assert_eq!(overflow, [true, true, true, true, true, false]);
        assert_eq!(l.len(), 3);
        // Not yet whole again: nothing to forget.
        clock.advance_by(Duration::from_millis(500));
        assert_eq!(l.sweep(), 3);
        clock.advance(1);
        assert_eq!(l.sweep(), 0);
        assert!(l.check("d").allowed);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn key_specs() {
        let headers = {
            let mut h = http::HeaderMap::new();
            h.insert("x-api-key", HeaderValue::from_static("k-1"));
            h
        };
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let user: Arc<str> = "player-7".into();
        let route: Arc<str> = "GET /a".into();
        let empty = http::HeaderMap::new();
        let with_user = KeyInputs {
            user: Some(&user),
            ip,
            headers: &headers,
            route: &route,
        };
        let anon = KeyInputs {
            user: None,
            ip,
            headers: &empty,
            route: &route,
        };
        let k = |s: &str, i: &KeyInputs<'_>| KeySpec::parse(s).unwrap().key(i, false);
        assert_eq!(k("user", &with_user), LimitKey::User(user.clone()));
        assert_eq!(k("user", &anon), LimitKey::Ip(ip));
        assert_eq!(
            k("header:x-api-key", &with_user),
            LimitKey::Header(HeaderValue::from_static("k-1"))
        );
        assert_eq!(k("header:x-api-key", &anon), LimitKey::Ip(ip));
        assert_eq!(k("route", &anon), LimitKey::Route(None));
        assert_eq!(
            KeySpec::parse("route").unwrap().key(&anon, true),
            LimitKey::Route(Some(route.clone()))
        );
        assert_eq!(
            k("user+ip", &with_user),
            LimitKey::Combined(vec![LimitKey::User(user.clone()), LimitKey::Ip(ip)].into())
        );
        assert_eq!(
            KeySpec::parse("user + header:X-Api-Key")
                .unwrap()
                .to_string(),
            "user+header:x-api-key"
        );
        for bad in ["", "users", "header:", "header:bad name", "ip+ip"] {
            assert!(KeySpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shared_store_names_are_unambiguous() {
        let name = |k: &LimitKey| {
            let mut v = Vec::new();
            k.write_to(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(name(&LimitKey::Ip("::1".parse().unwrap())), "i:::1");
        assert_eq!(
            name(&LimitKey::User("a|b{c}:".into())),
            "u:a\\7cb\\7bc\\7d\\3a"
        );
        // API keys never reach Redis as such; long users neither.
        let api = name(&LimitKey::Header(HeaderValue::from_static("secret-key-1")));
        assert!(
            api.starts_with("h#") && api.len() == 34 && !api.contains("secret"),
            "{api}"
        );
        assert!(name(&LimitKey::User("x".repeat(129).into())).starts_with("u#"));
        assert_ne!(
            name(&LimitKey::Combined(
                vec![LimitKey::User("a|u:b".into())].into()
            )),
            name(&LimitKey::Combined(
                vec![LimitKey::User("a".into()), LimitKey::User("b".into())].into()
            ))
        );
    }

    #[test]
    fn tighter_prefers_refusal_then_less_left() {
        let s = |allowed, remaining, reset| RateLimitStatus {
            allowed,
            limit: 10,
            remaining,
            reset_after: Duration::from_secs(reset),
            retry_after: Duration::ZERO,
        };
        assert_eq!(s(true, 5, 1).tighter(s(false, 0, 1)), s(false, 0, 1));
        assert_eq!(s(true, 5, 1).tighter(s(true, 2, 1)), s(true, 2, 1));
        assert_eq!(s(true, 2, 1).tighter(s(true, 2, 9)), s(true, 2, 9));
    }
}
