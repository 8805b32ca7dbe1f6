//! Counters shared by a fleet of gateways in Redis.
//!
//! One round trip per check: an `EVALSHA` of a Lua script that runs the same
//! GCRA as [`super::gcra`] atomically on the server, on the server's clock
//! (`TIME`), so gateways with skewed clocks still share one limit. Each key
//! lives only until its allowance is whole again (`PX` ≤ the window), so
//! Redis memory stays bounded. Keys are `prefix:{rule:key}`: one key per
//! script call, its hash tag naming it, so Redis Cluster can host them.
//!
//! When Redis fails or is slower than the timeout, the rule falls back as
//! configured (`local`: the in-process limiter; `allow`; `deny`), the outage
//! is logged once when it starts and once when it ends, and for a short
//! back-off no request waits on Redis at all; then one request tries again.
//! The connection manager reconnects by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{LimitKey, RateLimitStatus, Rule};
use crate::clock::Clock;

/// Failed checks in a row that make an outage (requests then skip Redis).
const FAILURES_FOR_OUTAGE: u32 = 3;

/// What a rule does while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBackendError {
    /// Count in this process instead (each gateway enforces the limit alone).
    #[default]
    Local,
    /// Let every request through.
    Allow,
    /// Refuse every request (429).
    Deny,
}

impl OnBackendError {
    /// The config spelling (`local`, `allow`, `deny`), for logs.
    pub fn name(self) -> &'static str {
        match self {
            OnBackendError::Local => "local",
            OnBackendError::Allow => "allow",
            OnBackendError::Deny => "deny",
        }
    }
}

/// Settings of the shared backend.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]` or `rediss://…`.
    pub url: String,
    /// Longest wait for one check before falling back.
    pub timeout: Duration,
    /// Behaviour while Redis fails.
    pub on_error: OnBackendError,
    /// Prefix of every key.
    pub key_prefix: String,
    /// After a failure, how long requests skip Redis before one tries again.
    pub retry_interval: Duration,
}

/// Why the backend could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RedisSetupError(String);

// KEYS[1]: the counter. ARGV[1]: emission interval, ARGV[2]: tolerance (µs).
// Returns {allowed, remaining, reset_after_us, retry_after_us}.
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local new_tat = tat + interval
local remaining = math.floor((now + tolerance + interval - new_tat) / interval)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
local retry = 0
if remaining == 0 then retry = new_tat - tolerance - now end
return {1, remaining, new_tat - now, retry}
";

/// A Redis connection shared by every rule of one config.
pub struct RedisBackend {
    settings: RedisSettings,
    client: redis::Client,
    /// Made by [`RedisBackend::connect`] inside the runtime (it spawns a task,
    /// so config validation, which runs outside one, cannot make it).
    manager: std::sync::OnceLock<ConnectionManager>,
    script: redis::Script,
    /// Monotonic ns before which requests do not try Redis.
    skip_until_ns: AtomicU64,
    /// An outage is in progress (logged at its start and end only).
    down: AtomicBool,
    /// Failed checks in a row; at [`FAILURES_FOR_OUTAGE`] an outage begins.
    failures: std::sync::atomic::AtomicU32,
    /// Monotonic ns when the current outage began: only a check sent after
    /// it ends it (a late answer to an old one does not).
    outage_since_ns: AtomicU64,
    /// A Redis error reply (OOM, a wrong-typed key) was logged; cleared by
    /// the next good answer.
    reply_error_logged: AtomicBool,
    /// The first connection has been made (the manager is set); until then
    /// checks fall back quietly instead of each waiting for a connect.
    ready: AtomicBool,
    clock: Arc<dyn Clock>,
    /// Checks answered by Redis / by the fallback (for metrics and tests).
    answered: AtomicU64,
    fell_back: AtomicU64,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("RedisBackend")
            .field("on_error", &self.settings.on_error)
            .field("timeout", &self.settings.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Set up the client; the connection is made lazily by the first check
    /// (start-up does not wait on, or fail for, a Redis that is down).
    ///
    /// # Errors
    /// When the URL is not a Redis URL.
    pub fn new(settings: RedisSettings, clock: Arc<dyn Clock>) -> Result<Self, RedisSetupError> {
        let client = redis::Client::open(settings.url.as_str())
            // Not the error's text: it may quote the URL and its password.
            .map_err(|e| {
                RedisSetupError(format!(
                    "not a Redis URL ({:?}); expected redis://[:password@]host:port[/db] or rediss://…",
                    e.kind()
                ))
            })?;
        Ok(RedisBackend {
            settings,
            client,
            manager: std::sync::OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            skip_until_ns: AtomicU64::new(0),
            down: AtomicBool::new(false),
            failures: std::sync::atomic::AtomicU32::new(0),
            outage_since_ns: AtomicU64::new(0),
            reply_error_logged: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            clock,
            answered: AtomicU64::new(0),
            fell_back: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Checks Redis answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Checks decided by the fallback.
    pub fn fell_back(&self) -> u64 {
        self.fell_back.load(Ordering::Relaxed)
    }

    /// True while an outage is in progress.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.monotonic().as_nanos()).unwrap_or(u64::MAX)
    }

    fn redis_key(&self, rule: &Rule, key: &LimitKey) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.settings.key_prefix.len() + rule.name.len() + 48);
        k.extend_from_slice(self.settings.key_prefix.as_bytes());
        k.extend_from_slice(b":{");
        // `route:`, `bucket:`, `rule:` are ours; what follows is the
        // operator's name, escaped so no two names can meet.
        match rule.name.split_once(':') {
            Some((kind, name)) => {
                k.extend_from_slice(kind.as_bytes());
                k.push(b':');
                super::escape(name.as_bytes(), &mut k);
            }
            None => super::escape(rule.name.as_bytes(), &mut k),
        }
        k.push(b':');
        key.write_to(&mut k);
        k.push(b'}');
        k
    }

    /// Make the first connection (retrying until it works or `stop`), so
    /// that no request waits on a connect. Started by the runtime.
    pub async fn connect(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let wait = self.settings.timeout.max(Duration::from_secs(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(wait))
            .set_response_timeout(Some(self.settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(m) => self.manager.get_or_init(|| m).clone(),
            Err(e) => {
                tracing::error!(error = %e, "rate limit: cannot set up the Redis client; falling back for good");
                self.first_connect_failed("client setup failed");
                return;
            }
        };
        loop {
            let mut conn = manager.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(wait, ping).await {
                Ok(Ok(_)) => {
                    self.ready.store(true, Ordering::Relaxed);
                    if self.down.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limit: Redis answers; limits are shared");
                    } else {
                        tracing::debug!("rate limit: connected to Redis");
                    }
                    return;
                }
                Ok(Err(e)) => self.first_connect_failed(&e.to_string()),
                Err(_) => self.first_connect_failed("timed out"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.retry_interval) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    fn first_connect_failed(&self, why: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = why,
                fallback = self.settings.on_error.name(),
                "rate limit: cannot reach Redis; falling back until it answers"
            );
        }
    }

    /// Count one request of `key` under `rule`.
    pub(super) async fn check(&self, rule: &Rule, key: &LimitKey) -> RateLimitStatus {
        let Some(manager) = self
            .manager
            .get()
            .filter(|_| self.ready.load(Ordering::Relaxed))
        else {
            return self.fallback(rule, key);
        };
        let now = self.now_ns();
        let skip_until = self.skip_until_ns.load(Ordering::Relaxed);
        if now < skip_until {
            return self.fallback(rule, key);
        }
        // During an outage one request at a time probes Redis; the rest fall
        // back at once instead of each waiting for the timeout.
        if self.down.load(Ordering::Relaxed) {
            let retry = u64::try_from(self.settings.retry_interval.as_nanos()).unwrap_or(u64::MAX);
            if self
                .skip_until_ns
                .compare_exchange(
                    skip_until,
                    now.saturating_add(retry),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                return self.fallback(rule, key);
            }
        }
        let g = rule.local.gcra();
        let interval_us = (g.interval_ns / 1_000).max(1);
        let tolerance_us = g.tolerance_ns / 1_000;
        let mut conn = manager.clone();
        let mut invocation = self.script.key(self.redis_key(rule, key));
        invocation.arg(interval_us).arg(tolerance_us);
        let call = invocation.invoke_async::<(u8, u64, u64, u64)>(&mut conn);
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok((allowed, remaining, reset_us, retry_us))) => {
                self.failures.store(0, Ordering::Relaxed);
                self.reply_error_logged.store(false, Ordering::Relaxed);
                let fresh = now >= self.outage_since_ns.load(Ordering::Relaxed);
                if fresh && self.down.swap(false, Ordering::Relaxed) {
                    // The probe's back-off window is over: share from now on.
                    self.skip_until_ns.store(0, Ordering::Relaxed);
                    tracing::info!(rule = %rule.name, "rate limit: Redis answers again; limits are shared again");
                }
                self.answered.fetch_add(1, Ordering::Relaxed);
                RateLimitStatus {
                    allowed: allowed == 1,
                    limit: g.reported_limit(),
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    reset_after: Duration::from_micros(reset_us),
                    retry_after: Duration::from_micros(retry_us),
                }
            }
            // The connection failed: counts towards an outage.
            Ok(Err(e))
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                self.failed(rule, key, &e.to_string())
            }
            // Redis answered, with an error (out of memory, a key of the
            // wrong type): Redis is up, this check cannot be counted there.
            // Its request alone takes the fallback.
            Ok(Err(e)) => {
                if !self.reply_error_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(rule = %rule.name, error = %e, fallback = self.settings.on_error.name(), "rate limit: Redis refused a check; the fallback decides such checks");
                }
                self.fallback(rule, key)
            }
            Err(_) => self.failed(rule, key, "timed out"),
        }
    }

    fn failed(&self, rule: &Rule, key: &LimitKey, why: &str) -> RateLimitStatus {
        // One late answer (a busy host, a GC pause of Redis) decides only its
        // own request by the fallback; a few in a row are an outage.
        let in_a_row = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row < FAILURES_FOR_OUTAGE && !self.down.load(Ordering::Relaxed) {
            tracing::debug!(rule = %rule.name, error = why, "rate limit: one Redis check failed; the fallback decides it");
            return self.fallback(rule, key);
        }
        let retry = u64::try_from(self.settings.retry_interval.as_nanos()).unwrap_or(u64::MAX);
        let now = self.now_ns();
        self.skip_until_ns
            .store(now.saturating_add(retry), Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            self.outage_since_ns.store(now, Ordering::Relaxed);
            tracing::warn!(
                rule = %rule.name,
                error = why,
                fallback = self.settings.on_error.name(),
                "rate limit: Redis unavailable; falling back until it answers again"
            );
        }
        self.fallback(rule, key)
    }

    fn fallback(&self, rule: &Rule, key: &LimitKey) -> RateLimitStatus {
        self.fell_back.fetch_add(1, Ordering::Relaxed);
        match self.settings.on_error {
            OnBackendError::Local => rule.local.check_key(key),
            OnBackendError::Allow => RateLimitStatus::unlimited(rule.local.gcra()),
            OnBackendError::Deny => RateLimitStatus::refused(rule.local.gcra()),
        }
    }
}
