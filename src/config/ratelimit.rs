//! `[rate_limit]` and the routes' `rate_limit = { … }` → [`Rule`]s, every
//! problem reported with the file, line and field.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file::{BackendFile, OnBackendErrorFile, RateLimitFile, RateLimitSectionFile};
use super::validate::{ConfigError, Ctx};
use crate::clock::Clock;
use crate::ratelimit::redis::{OnBackendError, RedisBackend, RedisSettings};
use crate::ratelimit::{KeySpec, RateLimitPolicy, RateLimiter, Rule, SharedRule};

/// Longest window a rule may have.
const MAX_WINDOW_SECONDS: u64 = 365 * 24 * 3600;

/// Every limit of one config.
#[derive(Debug, Default)]
pub struct RateLimits {
    /// `[[rate_limit.rules]]`: checked on every routed request.
    pub global: Vec<SharedRule>,
    /// Every rule (global and per route), for the sweeper.
    pub all: Vec<SharedRule>,
    /// The shared backend, when `backend = "redis"`.
    pub redis: Option<Arc<RedisBackend>>,
    /// Also send `X-RateLimit-*`.
    pub x_ratelimit_headers: bool,
    /// How often idle keys are forgotten.
    pub sweep_interval: Duration,
    /// IPv6 clients are counted per prefix of this length (one host
    /// commonly holds a whole /64).
    pub ipv6_prefix: u8,
}

impl RateLimits {
    /// The address a limit counts a client by: IPv4 as is, IPv6 cut to
    /// `ipv6_prefix` bits.
    pub fn client_key(&self, ip: std::net::IpAddr) -> std::net::IpAddr {
        match ip {
            std::net::IpAddr::V6(v6) if self.ipv6_prefix < 128 => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                std::net::IpAddr::V6((bits & mask).into())
            }
            other => other,
        }
    }
}

/// State while the routes are built.
pub(super) struct Builder {
    limits: RateLimits,
    max_keys: usize,
    clock: Arc<dyn Clock>,
    /// `bucket` name → the rule and the route that defined it.
    buckets: HashMap<String, Bucket>,
    warnings: Vec<String>,
}

/// A shared `bucket`: routes naming it must agree on its settings.
struct Bucket {
    rule: SharedRule,
    first_route: usize,
    /// requests_per_minute, burst, key.
    settings: (u32, u32, String),
}

impl Builder {
    /// Read `[rate_limit]` (absent: local counters, defaults).
    pub(super) fn new(
        cx: &Ctx<'_>,
        section: Option<&Spanned<RateLimitSectionFile>>,
        warnings: &mut Vec<String>,
    ) -> Result<Builder, ConfigError> {
        let clock = Arc::clone(&cx.clock);
        let Some(spanned) = section else {
            return Ok(Builder {
                limits: RateLimits {
                    sweep_interval: Duration::from_secs(10),
                    ipv6_prefix: 64,
                    ..RateLimits::default()
                },
                max_keys: crate::ratelimit::DEFAULT_MAX_KEYS,
                clock,
                buckets: HashMap::new(),
                warnings: Vec::new(),
            });
        };
        let s = spanned.get_ref();
        for (name, v) in [
            ("redis_timeout_ms", &s.redis_timeout_ms),
            ("redis_retry_interval_ms", &s.redis_retry_interval_ms),
            ("sweep_interval_seconds", &s.sweep_interval_seconds),
        ] {
            if *v.get_ref() == 0 {
                return Err(cx.spanned(v, format!("rate_limit.{name}"), "must be at least 1"));
            }
        }
        if !(1..=128).contains(s.ipv6_prefix.get_ref()) {
            return Err(cx.spanned(&s.ipv6_prefix, "rate_limit.ipv6_prefix", "must be 1 to 128"));
        }
        if *s.redis_timeout_ms.get_ref() > 10_000 {
            return Err(cx.spanned(
                &s.redis_timeout_ms,
                "rate_limit.redis_timeout_ms",
                "must be at most 10000 (10 s): a limit that waits longer than that is an outage",
            ));
        }
        if *s.redis_retry_interval_ms.get_ref() > 600_000 {
            return Err(cx.spanned(
                &s.redis_retry_interval_ms,
                "rate_limit.redis_retry_interval_ms",
                "must be at most 600000 (10 min)",
            ));
        }
        if s.key_prefix.get_ref().is_empty() {
            return Err(cx.spanned(&s.key_prefix, "rate_limit.key_prefix", "must not be empty"));
        }
        if *s.max_keys_per_rule.get_ref() == 0 {
            return Err(cx.spanned(
                &s.max_keys_per_rule,
                "rate_limit.max_keys_per_rule",
                "must be at least 1",
            ));
        }
        let redis = match s.backend.get_ref() {
            BackendFile::Local => {
                // Kept for a switch to "redis" (the documented example has
                // both), but said: an operator may expect it to be used.
                if s.redis_url.is_some() || s.redis_url_env.is_some() {
                    warnings.push(
                        "rate_limit: backend is \"local\", so redis_url is not used (counters stay in this process)".to_owned(),
                    );
                }
                None
            }
            BackendFile::Redis => {
                let backend = Arc::new(redis_backend(cx, s, Arc::clone(&clock))?);
                // The section without its rules (a new rule keeps the
                // connection), and the URL an env var may hold.
                let mut section = cx.values.get("rate_limit").cloned();
                if let Some(toml::Value::Table(t)) = &mut section {
                    t.remove("rules");
                }
                let url_env = s
                    .redis_url_env
                    .as_ref()
                    .and_then(|e| std::env::var(e.get_ref()).ok());
                let fp = super::reuse::fingerprint(&(
                    super::reuse::value_text(section.as_ref()),
                    url_env,
                ));
                Some(cx.reuse("redis".to_owned(), fp, || backend))
            }
        };
        let mut b = Builder {
            limits: RateLimits {
                redis,
                x_ratelimit_headers: s.x_ratelimit_headers,
                sweep_interval: Duration::from_secs(*s.sweep_interval_seconds.get_ref()),
                ipv6_prefix: *s.ipv6_prefix.get_ref(),
                ..RateLimits::default()
            },
            max_keys: *s.max_keys_per_rule.get_ref(),
            clock,
            buckets: HashMap::new(),
            warnings: Vec::new(),
        };
        let mut names = HashMap::new();
        for (i, r) in s.rules.iter().enumerate() {
            let field = |f: &str| format!("rate_limit.rules[{i}].{f}");
            if r.name.get_ref().is_empty() {
                return Err(cx.spanned(&r.name, field("name"), "must not be empty"));
            }
            if names.insert(r.name.get_ref().clone(), i).is_some() {
                return Err(cx.spanned(
                    &r.name,
                    field("name"),
                    format!("a second rule named {:?}", r.name.get_ref()),
                ));
            }
            let (policy, at) = match (&r.requests_per_minute, &r.window_seconds, &r.max_requests) {
                (Some(rpm), None, None) => (
                    RateLimitPolicy {
                        window_seconds: 60,
                        max_requests: *rpm.get_ref(),
                    },
                    rpm.span(),
                ),
                (None, Some(w), Some(m)) => (
                    RateLimitPolicy {
                        window_seconds: *w.get_ref(),
                        max_requests: *m.get_ref(),
                    },
                    m.span(),
                ),
                _ => {
                    return Err(cx.spanned(
                        &r.name,
                        format!("rate_limit.rules[{i}]"),
                        "give requests_per_minute, or window_seconds and max_requests",
                    ));
                }
            };
            let name = format!("rule:{}", r.name.get_ref());
            let rule = b.rule(
                cx,
                &name,
                policy,
                at,
                r.burst.as_ref(),
                r.key.as_ref(),
                &field,
                true,
            )?;
            b.limits.global.push(rule);
        }
        Ok(b)
    }

    #[allow(clippy::too_many_arguments)]
    fn rule(
        &mut self,
        cx: &Ctx<'_>,
        name: &str,
        policy: RateLimitPolicy,
        at: std::ops::Range<usize>,
        burst: Option<&Spanned<u32>>,
        key: Option<&Spanned<String>>,
        field: &dyn Fn(&str) -> String,
        on_every_route: bool,
    ) -> Result<SharedRule, ConfigError> {
        let spec = match key {
            None => KeySpec::parse("user").expect("a valid key"),
            Some(k) => KeySpec::parse(k.get_ref())
                .map_err(|e| cx.spanned(k, field("key"), e.to_string()))?,
        };
        if policy.window_seconds == 0 || policy.window_seconds > MAX_WINDOW_SECONDS {
            return Err(cx.at(
                at,
                field("window_seconds"),
                format!("must be 1 to {MAX_WINDOW_SECONDS} (one year)"),
            ));
        }
        if policy.max_requests == 0 {
            return Err(cx.at(
                at,
                field(if policy.window_seconds == 60 {
                    "requests_per_minute"
                } else {
                    "max_requests"
                }),
                "must be at least 1 (to block a route, do not route it)",
            ));
        }
        let burst_value = burst.map_or(policy.max_requests, |b| *b.get_ref());
        let rate_field = if policy.window_seconds == 60 && field("x").contains("routes[") {
            "requests_per_minute"
        } else {
            "max_requests"
        };
        let limiter = RateLimiter::try_new(policy, burst_value)
            .map_err(|e| match burst {
                Some(b) if *b.get_ref() == 0 => cx.spanned(b, field("burst"), "must be at least 1"),
                Some(b) => cx.spanned(
                    b,
                    field("burst"),
                    format!("{e} (burst × interval must fit the window's arithmetic)"),
                ),
                None => cx.at(at.clone(), field(rate_field), e.to_string()),
            })?
            .with_max_keys(self.max_keys)
            .with_clock(Arc::clone(&self.clock));
        // A rule whose settings are unchanged keeps its counters over a reload.
        let fp = super::reuse::fingerprint(&(
            format!("{policy:?}"),
            burst_value,
            key.map(|k| k.get_ref().as_str()),
            on_every_route,
            self.max_keys,
            self.limits.redis.as_ref().map(|r| Arc::as_ptr(r) as usize),
        ));
        let redis = self.limits.redis.clone();
        let rule = SharedRule(cx.reuse(format!("ratelimit:{name}"), fp, || {
            let mut rule = Rule::local(name, spec, limiter);
            if on_every_route {
                rule = rule.on_every_route();
            }
            if let Some(r) = redis {
                rule = rule.shared(r);
            }
            Arc::new(rule)
        }));
        self.limits.all.push(rule.clone());
        Ok(rule)
    }

    /// The rule of route `i` (`name` identifies it across gateways).
    pub(super) fn route_rule(
        &mut self,
        cx: &Ctx<'_>,
        i: usize,
        name: &str,
        rl: &Spanned<RateLimitFile>,
    ) -> Result<SharedRule, ConfigError> {
        let r = rl.get_ref();
        let field = |f: &str| format!("routes[{i}].rate_limit.{f}");
        let policy = RateLimitPolicy {
            window_seconds: 60,
            max_requests: *r.requests_per_minute.get_ref(),
        };
        let at = r.requests_per_minute.span();
        let settings = (
            policy.max_requests,
            r.burst
                .as_ref()
                .map_or(policy.max_requests, |b| *b.get_ref()),
            r.key
                .as_ref()
                .map_or_else(|| "user".to_owned(), |k| k.get_ref().clone()),
        );
        if let Some(bucket) = &r.bucket {
            if bucket.get_ref().is_empty() {
                return Err(cx.spanned(bucket, field("bucket"), "must not be empty"));
            }
            if let Some(b) = self.buckets.get(bucket.get_ref()) {
                if b.settings != settings {
                    let first = b.first_route;
                    let (rpm, burst, key) = &b.settings;
                    return Err(cx.spanned(
                        bucket,
                        field("bucket"),
                        format!(
                            "bucket {:?} is defined by routes[{first}] as requests_per_minute = {rpm}, burst = {burst}, key = {key:?}; every route of a bucket must say the same",
                            bucket.get_ref()
                        ),
                    ));
                }
                return Ok(b.rule.clone());
            }
            let rule = self.rule(
                cx,
                &format!("bucket:{}", bucket.get_ref()),
                policy,
                at,
                r.burst.as_ref(),
                r.key.as_ref(),
                &field,
                false,
            )?;
            self.buckets.insert(
                bucket.get_ref().clone(),
                Bucket {
                    rule: rule.clone(),
                    first_route: i,
                    settings,
                },
            );
            return Ok(rule);
        }
        self.rule(
            cx,
            &format!("route:{name}"),
            policy,
            at,
            r.burst.as_ref(),
            r.key.as_ref(),
            &field,
            false,
        )
    }

    /// Something accepted but worth telling the operator.
    pub(super) fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// The finished set, and its warnings.
    pub(super) fn finish(self) -> (RateLimits, Vec<String>) {
        (self.limits, self.warnings)
    }
}

fn redis_backend(
    cx: &Ctx<'_>,
    s: &RateLimitSectionFile,
    clock: Arc<dyn Clock>,
) -> Result<RedisBackend, ConfigError> {
    let (url, at, field) = match (&s.redis_url, &s.redis_url_env) {
        (Some(u), None) => (u.get_ref().clone(), u, "rate_limit.redis_url"),
        (None, Some(env)) => {
            let v = std::env::var(env.get_ref()).map_err(|_| {
                cx.spanned(
                    env,
                    "rate_limit.redis_url_env",
                    format!(
                        "environment variable {} is not set (or not UTF-8)",
                        super::validate::env_name_shown(env.get_ref())
                    ),
                )
            })?;
            (v, env, "rate_limit.redis_url_env")
        }
        (Some(u), Some(_)) => {
            return Err(cx.spanned(
                u,
                "rate_limit.redis_url",
                "give redis_url or redis_url_env, not both",
            ));
        }
        (None, None) => {
            return Err(cx.spanned(
                &s.backend,
                "rate_limit.backend",
                "backend \"redis\" needs redis_url (or redis_url_env)",
            ));
        }
    };
    RedisBackend::new(
        RedisSettings {
            url,
            timeout: Duration::from_millis(*s.redis_timeout_ms.get_ref()),
            on_error: match s.on_backend_error {
                OnBackendErrorFile::Local => OnBackendError::Local,
                OnBackendErrorFile::Allow => OnBackendError::Allow,
                OnBackendErrorFile::Deny => OnBackendError::Deny,
            },
            key_prefix: s.key_prefix.get_ref().clone(),
            retry_interval: Duration::from_millis(*s.redis_retry_interval_ms.get_ref()),
        },
        clock,
    )
    .map_err(|e| cx.spanned(at, field, e.to_string()))
}
