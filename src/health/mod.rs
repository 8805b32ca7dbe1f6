//! Health: active probes of every endpoint, passive outlier detection from
//! real traffic, and the report the admin API shows.
//!
//! ```
//! use aether_gateway::{HealthChecker, HealthCheckConfig, ServiceHealth};
//! let checker = HealthChecker::new(HealthCheckConfig {
//!     interval_seconds: 10,
//!     timeout_ms: 3000,
//!     unhealthy_threshold: 3,
//! });
//! ```
//!
//! The probe task of an endpoint is the only writer of its active state;
//! requests read it with one relaxed load. The first probe of an endpoint
//! settles it (see [`state::ProbeCounter::record`]); afterwards it takes
//! `unhealthy_threshold` failures in a row to mark it down and
//! `healthy_threshold` successes in a row to mark it up.

pub mod outlier;
mod probe;
pub mod state;

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use probe::ProbeResult;
pub use state::{HealthState, ProbeCounter, Thresholds};

use crate::upstream::{Endpoint, Service};

/// The seed's probe settings: how often, how long to wait, when to mark down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Seconds between two probes of one endpoint (jittered by ±10 %).
    pub interval_seconds: u64,
    /// A probe that takes longer fails.
    pub timeout_ms: u64,
    /// Failed probes in a row that mark an endpoint down.
    pub unhealthy_threshold: u32,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP request over the service's protocol.
    Http(HttpProbe),
    /// A TCP connect.
    Tcp,
}

/// An HTTP probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// Request method (default GET).
    pub method: http::Method,
    /// Request path and query (default `/health`).
    pub path: http::uri::PathAndQuery,
    /// `Host` sent (default the endpoint's `ip:port`).
    pub host: Option<http::HeaderValue>,
    /// Statuses that pass (default 200–399, as HAProxy).
    pub expected_status: RangeInclusive<u16>,
    /// When set, the body (its first 64 KiB) must contain this.
    pub body_contains: Option<String>,
}

impl Default for HttpProbe {
    fn default() -> Self {
        HttpProbe {
            method: http::Method::GET,
            path: http::uri::PathAndQuery::from_static("/health"),
            host: None,
            expected_status: 200..=399,
            body_contains: None,
        }
    }
}

/// Periodically probes a service's endpoints and records their health.
#[derive(Debug, Clone)]
pub struct HealthChecker {
    config: HealthCheckConfig,
    interval: Duration,
    timeout: Duration,
    thresholds: Thresholds,
    probe: Probe,
    jitter_percent: u8,
}

impl HealthChecker {
    /// HTTP `GET /health` probes with these settings, healthy again after
    /// 2 passes in a row.
    pub fn new(config: HealthCheckConfig) -> Self {
        HealthChecker {
            config,
            interval: Duration::from_secs(config.interval_seconds.max(1)),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            thresholds: Thresholds {
                unhealthy: config.unhealthy_threshold.max(1),
                healthy: 2,
            },
            probe: Probe::Http(HttpProbe::default()),
            jitter_percent: 10,
        }
    }

    /// Probe this often instead of `interval_seconds` (finer than seconds).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Passing probes in a row that mark an endpoint up again.
    pub fn with_healthy_threshold(mut self, n: u32) -> Self {
        self.thresholds.healthy = n.max(1);
        self
    }

    /// What to probe.
    pub fn with_probe(mut self, probe: Probe) -> Self {
        self.probe = probe;
        self
    }

    /// Spread of each interval, in percent (0 = exact intervals).
    pub fn with_jitter_percent(mut self, percent: u8) -> Self {
        self.jitter_percent = percent.min(50);
        self
    }

    /// The seed's settings as given.
    pub fn config(&self) -> &HealthCheckConfig {
        &self.config
    }

    /// Time between probes (before jitter).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// The probe.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Count one probe result for `endpoint`; the new state when it changed.
    pub fn record(
        &self,
        endpoint: &Endpoint,
        result: ProbeResult,
        unix_now: u64,
    ) -> Option<HealthState> {
        let mut rec = endpoint.record.lock().unwrap_or_else(|p| p.into_inner());
        let changed = rec.counter.record(result.passed, self.thresholds);
        if result.passed {
            let ms = result.latency.as_secs_f64() * 1000.0;
            // EWMA with α = 0.3: a few probes follow a real change, one
            // outlier moves it by less than a third.
            let ewma = match rec.latency_ewma_ms {
                Some(prev) => prev + 0.3 * (ms - prev),
                None => ms,
            };
            rec.latency_ewma_ms = Some(ewma);
            endpoint.set_probe_latency(ewma);
        }
        rec.last = Some(result);
        if changed {
            rec.since_unix = Some(unix_now);
            endpoint.set_health_state(rec.counter.state);
            Some(rec.counter.state)
        } else {
            None
        }
    }

    /// The next interval, jittered.
    fn next_interval(&self) -> Duration {
        jittered(self.interval, self.jitter_percent, fastrand::f64())
    }

    /// Probe `endpoint` forever (until `stop`), recording every result.
    pub(crate) async fn run_endpoint(
        self: Arc<Self>,
        service: Arc<Service>,
        endpoint: Arc<Endpoint>,
        stop: CancellationToken,
    ) {
        // The first probe comes soon (a new endpoint is settled fast) but
        // not at the same instant on every gateway of a fleet.
        let first = self.interval.mul_f64(fastrand::f64() * 0.1);
        let mut wait = first;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            let result = tokio::select! {
                r = probe::run(&self, &service, &endpoint) => r,
                () = stop.cancelled() => return,
            };
            let passed = result.passed;
            let detail = result.error.clone();
            let unix_now = service.clock().unix_seconds();
            if let Some(state) = self.record(&endpoint, result, unix_now) {
                match state {
                    HealthState::Unhealthy => tracing::warn!(
                        service = %service.target,
                        endpoint = %endpoint.address,
                        reason = detail.as_deref().unwrap_or("unexpected response"),
                        "endpoint marked unhealthy"
                    ),
                    _ => tracing::info!(
                        service = %service.target,
                        endpoint = %endpoint.address,
                        "endpoint marked healthy"
                    ),
                }
            } else if !passed {
                tracing::debug!(endpoint = %endpoint.address, reason = ?detail, "probe failed");
            }
            wait = self.next_interval();
        }
    }
}

fn jittered(interval: Duration, percent: u8, unit: f64) -> Duration {
    let spread = f64::from(percent) / 100.0;
    interval.mul_f64(1.0 - spread + 2.0 * spread * unit.clamp(0.0, 1.0))
}

/// Probe history of one endpoint (behind a mutex: written once per probe).
#[derive(Debug, Clone, Default)]
pub struct HealthRecord {
    /// Consecutive results and state.
    pub counter: ProbeCounter,
    /// Unix seconds of the last state change.
    pub since_unix: Option<u64>,
    /// The last probe.
    pub last: Option<ProbeResult>,
    /// EWMA of passing probes' round-trip time, in ms.
    pub latency_ewma_ms: Option<f64>,
}

/// Keep one probe task per endpoint of `service` while `stop` is not
/// cancelled, following endpoint-set changes (discovery).
pub(crate) async fn supervise(service: Arc<Service>, stop: CancellationToken) {
    let Some(checker) = service.health_check.clone() else {
        return;
    };
    let mut generation = service.generation.subscribe();
    let mut tasks: Vec<(Arc<Endpoint>, CancellationToken)> = Vec::new();
    loop {
        let set = service.endpoints();
        tasks.retain(|(ep, token)| {
            let stays = set.endpoints.iter().any(|e| Arc::ptr_eq(e, ep));
            if !stays {
                token.cancel();
            }
            stays
        });
        for ep in &set.endpoints {
            if !tasks.iter().any(|(e, _)| Arc::ptr_eq(e, ep)) {
                let token = stop.child_token();
                tokio::spawn(Arc::clone(&checker).run_endpoint(
                    Arc::clone(&service),
                    Arc::clone(ep),
                    token.clone(),
                ));
                tasks.push((Arc::clone(ep), token));
            }
        }
        tokio::select! {
            r = generation.changed() => if r.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

/// A service's health and load, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceHealth {
    /// The service name.
    pub service: String,
    /// The balancing policy.
    pub balance: &'static str,
    /// No endpoint passes its checks (requests follow `all_unhealthy`).
    pub panic: bool,
    /// Where the endpoints come from.
    pub discovery: String,
    /// Retries granted and refused by the budget, and retries available now.
    pub retry_budget: RetryBudgetReport,
    /// Every endpoint.
    pub endpoints: Vec<EndpointHealth>,
}

/// The retry budget's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RetryBudgetReport {
    /// Retries sent.
    pub granted: u64,
    /// Retries not sent because the budget was spent.
    pub refused: u64,
    /// Retries that could be sent now.
    pub available: i64,
}

/// One endpoint's health and load.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointHealth {
    /// `ip:port`.
    pub address: String,
    /// Its region, if configured.
    pub region: Option<String>,
    /// Its weight.
    pub weight: u32,
    /// What active checks say.
    pub health: HealthState,
    /// Whether requests go to it now (healthy or unknown, and not ejected).
    pub serving: bool,
    /// Unix seconds of the last active state change.
    pub since_unix: Option<u64>,
    /// Failed probes in a row.
    pub consecutive_probe_failures: u32,
    /// Passing probes in a row.
    pub consecutive_probe_successes: u32,
    /// The last probe.
    pub last_probe: Option<ProbeResult>,
    /// EWMA of probe round-trip times in ms (the geo router's latency figure).
    pub probe_latency_ms: Option<f64>,
    /// Ejected by outlier detection right now.
    pub ejected: bool,
    /// Milliseconds left of the current ejection.
    pub ejected_for_ms: Option<u64>,
    /// Ejections so far.
    pub ejections: u64,
    /// Failed requests in a row (passive).
    pub consecutive_failures: u32,
    /// Requests in flight.
    pub in_flight: u32,
    /// Requests sent.
    pub requests: u64,
    /// Failed exchanges.
    pub failures: u64,
    /// Peak-EWMA latency of real requests, in ms.
    pub latency_ms: f64,
    /// Idle pooled connections.
    pub idle_connections: usize,
}

impl ServiceHealth {
    /// The report of `service` now.
    pub fn of(service: &Service) -> Self {
        let now_ms = service.now_ms();
        let now = service.clock().monotonic();
        let set = service.endpoints();
        let endpoints = set
            .endpoints
            .iter()
            .map(|e| {
                let rec = e.record.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let until = e.outlier.ejected_until(now_ms);
                EndpointHealth {
                    address: e.address.to_string(),
                    region: e.region.clone(),
                    weight: e.weight(),
                    health: e.health_state(),
                    serving: e.health_state().serves() && until.is_none(),
                    since_unix: rec.since_unix,
                    consecutive_probe_failures: rec.counter.consecutive_failures,
                    consecutive_probe_successes: rec.counter.consecutive_successes,
                    last_probe: rec.last,
                    probe_latency_ms: rec.latency_ewma_ms,
                    ejected: until.is_some(),
                    ejected_for_ms: until.map(|u| u - now_ms),
                    ejections: e.outlier.ejections(),
                    consecutive_failures: e.outlier.consecutive_failures(),
                    in_flight: e.requests_in_flight(),
                    requests: e.requests_total(),
                    failures: e.failures_total(),
                    latency_ms: e.latency_estimate(now).as_secs_f64() * 1000.0,
                    idle_connections: e.idle_connections(),
                }
            })
            .collect();
        ServiceHealth {
            service: service.target.to_string(),
            balance: match service.policy().balance {
                crate::upstream::BalancePolicy::RoundRobin => "round_robin",
                crate::upstream::BalancePolicy::LeastRequest => "least_request",
                crate::upstream::BalancePolicy::PeakEwma => "peak_ewma",
                crate::upstream::BalancePolicy::ConsistentHash => "consistent_hash",
            },
            panic: service.in_panic(),
            discovery: service
                .discovery
                .as_ref()
                .map_or_else(|| "static".to_owned(), |d| d.describe()),
            retry_budget: RetryBudgetReport {
                granted: service.retry_budget.granted(),
                refused: service.retry_budget.refused(),
                available: service.retry_budget.available(),
            },
            endpoints,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_spread() {
        let i = Duration::from_secs(10);
        assert_eq!(jittered(i, 10, 0.0), Duration::from_secs(9));
        assert_eq!(jittered(i, 10, 1.0), Duration::from_secs(11));
        assert_eq!(jittered(i, 0, 0.7), i);
    }

    #[test]
    fn record_applies_thresholds_and_mirrors_the_probe_latency() {
        let c = HealthChecker::new(HealthCheckConfig {
            interval_seconds: 1,
            timeout_ms: 100,
            unhealthy_threshold: 2,
        });
        let ep = Endpoint::new(
            ([127, 0, 0, 1], 9).into(),
            None,
            crate::upstream::PoolConfig::for_protocol(crate::upstream::UpstreamProtocol::Http1),
        );
        let probe = |passed: bool, ms: u64| ProbeResult {
            passed,
            status: Some(if passed { 200 } else { 503 }),
            error: None,
            latency: Duration::from_millis(ms),
        };
        assert_eq!(ep.probe_latency(), None);
        assert_eq!(
            c.record(&ep, probe(true, 10), 100),
            Some(HealthState::Healthy)
        );
        assert_eq!(ep.probe_latency(), Some(Duration::from_millis(10)));
        // EWMA, α = 0.3: 10 + 0.3 × (20 − 10) = 13 ms.
        assert_eq!(c.record(&ep, probe(true, 20), 101), None);
        assert_eq!(ep.probe_latency(), Some(Duration::from_millis(13)));
        assert_eq!(c.record(&ep, probe(false, 1), 102), None);
        assert_eq!(
            c.record(&ep, probe(false, 1), 103),
            Some(HealthState::Unhealthy)
        );
        assert_eq!(ep.health_state(), HealthState::Unhealthy);
        // Failed probes do not move the latency figure.
        assert_eq!(ep.probe_latency(), Some(Duration::from_millis(13)));
        assert_eq!(ep.record.lock().unwrap().since_unix, Some(103));
    }

    #[test]
    fn seed_config_gives_http_probe_and_thresholds() {
        let c = HealthChecker::new(HealthCheckConfig {
            interval_seconds: 10,
            timeout_ms: 3000,
            unhealthy_threshold: 3,
        });
        assert_eq!(c.interval(), Duration::from_secs(10));
        assert_eq!(
            c.thresholds(),
            Thresholds {
                unhealthy: 3,
                healthy: 2
            }
        );
        assert_eq!(c.probe(), &Probe::Http(HttpProbe::default()));
    }
}
