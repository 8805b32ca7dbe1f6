//! Observability: Prometheus/OpenMetrics counters, the access log line and
//! W3C trace context.
//!
//! One [`Metrics`] lives as long as the running gateway (in `Shared`, not in
//! the config snapshot), so counts go on across config reloads. Figures
//! the gateway already keeps elsewhere (endpoint health, ejections,
//! retries, in-flight requests, the relay's allocations and bytes) are read
//! from the current snapshot when `/metrics` is scraped, never counted a
//! second time on the request path.
//!
//! The request path touches only atomics: a route's handles are resolved
//! once per route (a `OnceLock` in its [`RouteEntry`]) from its label
//! values, so a route rebuilt by a reload finds the same counters again.

pub mod access;
pub mod histogram;
#[cfg(feature = "otel")]
pub mod otel;
pub mod traceparent;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

pub use histogram::DurationHistogram;

use crate::ratelimit::SharedRule;
use crate::router::RouteEntry;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of requests that matched no route (404, 405, `OPTIONS *`,
/// requests refused before routing).
pub const NO_ROUTE: &str = "none";

/// The status classes, index `status / 100 - 1`; anything past 5xx is "other".
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Every reason an auth failure is counted under: `AuthError::reason()`'s
/// values and `forbidden` (a valid token without the route's role).
const AUTH_REASONS: [&str; 16] = [
    "missing",
    "not_bearer",
    "malformed",
    "algorithm",
    "critical_header",
    "unknown_key",
    "bad_signature",
    "no_expiry",
    "expired",
    "not_yet_valid",
    "issued_in_future",
    "issuer",
    "audience",
    "missing_claim",
    "keys_unavailable",
    "forbidden",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    service: Arc<str>,
    method: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: Arc<str>,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Lines the log writer queues before it drops them (see `main.rs`).
pub const LOG_QUEUE_LINES: usize = 32_768;

static DROPPED_LOG_LINES: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// The process's log writer's count of dropped lines, for `/metrics`.
pub fn count_dropped_log_lines(counter: tracing_appender::non_blocking::ErrorCounter) {
    let _ = DROPPED_LOG_LINES.set(counter);
}

/// The gateway's own counters, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    gateway_seconds: Family<RouteLabels, DurationHistogram>,
    upstream_seconds: Family<RouteLabels, DurationHistogram>,
    rate_limit: Family<RuleLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    auth_handles: [OnceLock<Counter>; AUTH_REASONS.len()],
    /// Client connections open now.
    pub connections: Gauge,
    /// WebSocket (upgraded) tunnels open now.
    pub websockets: Gauge,
    tls_handshake_failures: Family<ReasonLabels, Counter>,
    /// Handles of requests that matched no route.
    unrouted: RouteMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of counters, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aether");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route template, service, method and status class",
            requests.clone(),
        );
        let gateway_seconds = Family::<RouteLabels, DurationHistogram>::default();
        registry.register_with_unit(
            "request_gateway_duration",
            "Time the gateway added to a request (until response headers, minus the upstream's time)",
            Unit::Seconds,
            gateway_seconds.clone(),
        );
        let upstream_seconds = Family::<RouteLabels, DurationHistogram>::default();
        registry.register_with_unit(
            "request_upstream_duration",
            "Time from sending a request upstream to its response headers, retries included",
            Unit::Seconds,
            upstream_seconds.clone(),
        );
        let rate_limit = Family::<RuleLabels, Counter>::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit checks, by rule and decision (allowed or limited)",
            rate_limit.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by auth (401/403), by reason",
            auth_failures.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "client_connections",
            "Client connections open",
            connections.clone(),
        );
        let websockets = Gauge::default();
        registry.register(
            "websocket_tunnels",
            "WebSocket tunnels open",
            websockets.clone(),
        );
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes on the listener that failed (error) or were not finished within the header-read timeout (timeout)",
            tls_handshake_failures.clone(),
        );
        let unrouted = RouteMetrics::build(
            &requests,
            &gateway_seconds,
            &upstream_seconds,
            &rate_limit,
            Arc::from(NO_ROUTE),
            Arc::from(NO_ROUTE),
            NO_ROUTE,
            std::iter::empty(),
        );
        Metrics {
            registry,
            requests,
            gateway_seconds,
            upstream_seconds,
            rate_limit,
            auth_failures,
            auth_handles: Default::default(),
            connections,
            websockets,
            tls_handshake_failures,
            unrouted,
        }
    }

    /// The handles of a route: resolved on its first request (the label
    /// lookup takes the family's lock once), atomics only afterwards.
    /// `global` are the snapshot's rules on every route, checked after
    /// the route's own.
    pub fn route<'a>(&self, entry: &'a RouteEntry, global: &[SharedRule]) -> &'a RouteMetrics {
        entry.metrics.get_or_init(|| {
            RouteMetrics::build(
                &self.requests,
                &self.gateway_seconds,
                &self.upstream_seconds,
                &self.rate_limit,
                Arc::clone(&entry.policy.name),
                Arc::from(entry.route.target.name()),
                entry.route.method.as_str(),
                entry.policy.rate_limit.iter().chain(global),
            )
        })
    }

    /// Show both handshake-failure series at 0 from the start (a TLS
    /// listener): a `rate()` alert then has a series before the first failure.
    pub fn tls_listener(&self) {
        for reason in ["error", "timeout"] {
            drop(
                self.tls_handshake_failures
                    .get_or_create(&ReasonLabels { reason }),
            );
        }
    }

    /// Count a failed listener handshake: `reason` is `"error"` or `"timeout"`.
    pub fn tls_handshake_failed(&self, reason: &'static str) {
        // Rare (a failure): the family's lock is fine here.
        self.tls_handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The handles of requests that matched no route.
    pub fn unrouted(&self) -> &RouteMetrics {
        &self.unrouted
    }

    /// Count an auth refusal; `reason` is `AuthError::reason()` or `"forbidden"`.
    pub fn auth_failure(&self, reason: &'static str) {
        let Some(i) = AUTH_REASONS.iter().position(|r| *r == reason) else {
            // A reason added to AuthError but not here: counted, at a lock's cost.
            self.auth_failures
                .get_or_create(&ReasonLabels { reason })
                .inc();
            return;
        };
        self.auth_handles[i]
            .get_or_init(|| {
                self.auth_failures
                    .get_or_create_owned(&ReasonLabels { reason })
            })
            .inc();
    }

    /// The text of `GET /metrics`: the gateway's counters, then the
    /// snapshot's services and the relay read now.
    pub fn encode(
        &self,
        snapshot: &crate::config::Snapshot,
        relay: Option<&crate::relay::Relay>,
    ) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let now = scrape::registry(snapshot, relay);
        // Writing to a String cannot fail; the encoder's errors are the writer's.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &now);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

/// The `GET /metrics` response of the admin API.
pub(crate) fn scrape(
    shared: &crate::dispatch::pipeline::Shared,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let mut text = shared
        .metrics
        .encode(&shared.snapshot.load(), shared.relay.as_deref());
    // The reload figures go before the `# EOF` the encoder ended with.
    let eof = text.len() - "# EOF\n".len();
    text.truncate(eof);
    let reload = scrape::reload_registry(&shared.reload.status());
    let _ = prometheus_client::encoding::text::encode_registry(&mut text, &reload);
    if let Some(dropped) = DROPPED_LOG_LINES.get() {
        let mut log = prometheus_client::registry::Registry::with_prefix("aether_log");
        let c = prometheus_client::metrics::counter::Counter::<u64>::default();
        c.inc_by(dropped.dropped_lines() as u64);
        log.register(
            "lines_dropped",
            "Log lines dropped because the log writer's queue was full (a stalled log reader)",
            c,
        );
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &log);
    }
    if let Some(store) = &shared.tls {
        let tls = scrape::tls_registry(store);
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &tls);
    }
    let _ = prometheus_client::encoding::text::encode_eof(&mut text);
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(text)));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

/// One route's counters and histograms.
#[derive(Debug)]
pub struct RouteMetrics {
    /// By status class (see `STATUS_CLASSES`).
    requests: [Counter; 6],
    /// Gateway-added time.
    pub gateway: DurationHistogram,
    /// Upstream time to headers.
    pub upstream: DurationHistogram,
    /// Allowed and limited counters of each rule the route checks, in the
    /// order the pipeline checks them.
    rules: Box<[(Counter, Counter)]>,
}

impl RouteMetrics {
    #[allow(clippy::too_many_arguments)]
    fn build<'a>(
        requests: &Family<RequestLabels, Counter>,
        gateway: &Family<RouteLabels, DurationHistogram>,
        upstream: &Family<RouteLabels, DurationHistogram>,
        rate_limit: &Family<RuleLabels, Counter>,
        route: Arc<str>,
        service: Arc<str>,
        method: &'static str,
        rules: impl Iterator<Item = &'a SharedRule>,
    ) -> Self {
        let requests = STATUS_CLASSES.map(|status_class| {
            requests.get_or_create_owned(&RequestLabels {
                route: Arc::clone(&route),
                service: Arc::clone(&service),
                method,
                status_class,
            })
        });
        let by_route = RouteLabels {
            route: Arc::clone(&route),
        };
        let rule = |rule: &SharedRule, decision| {
            rate_limit.get_or_create_owned(&RuleLabels {
                rule: Arc::clone(&rule.name),
                decision,
            })
        };
        RouteMetrics {
            requests,
            gateway: gateway.get_or_create_owned(&by_route),
            upstream: upstream.get_or_create_owned(&by_route),
            rules: rules
                .map(|r| (rule(r, "allowed"), rule(r, "limited")))
                .collect(),
        }
    }

    /// Count one answered request: its status, the time until its response
    /// headers and the upstream's share of it (`None`: not sent upstream).
    pub fn answered(&self, status: u16, total: Duration, upstream: Option<Duration>) {
        let class = usize::from(status / 100)
            .saturating_sub(1)
            .min(STATUS_CLASSES.len() - 1);
        self.requests[class].inc();
        match upstream {
            Some(up) => {
                self.upstream.observe(up);
                self.gateway.observe(total.saturating_sub(up));
            }
            None => self.gateway.observe(total),
        }
    }

    /// Count the `i`-th rule's decision.
    pub fn rate_limited(&self, i: usize, allowed: bool) {
        if let Some((a, l)) = self.rules.get(i) {
            if allowed {
                a.inc()
            } else {
                l.inc()
            };
        }
    }
}

/// Holds a gauge one higher while alive (an open connection, a tunnel).
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Raise `gauge` by one until the guard drops.
    pub fn inc(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A slot in each route entry for its handles (see [`Metrics::route`]).
#[derive(Debug, Default)]
pub struct RouteSlot(OnceLock<RouteMetrics>);

impl RouteSlot {
    fn get_or_init(&self, f: impl FnOnce() -> RouteMetrics) -> &RouteMetrics {
        self.0.get_or_init(f)
    }
}

/// Figures read at scrape time from the state that already holds them.
mod scrape {
    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct EndpointLabels {
        service: String,
        endpoint: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ConnLabels {
        service: String,
        endpoint: String,
        connection: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ServiceLabels {
        service: String,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct RetryLabels {
        service: String,
        outcome: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct DirectionLabels {
        direction: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct DropLabels {
        reason: &'static str,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ResultLabels {
        result: &'static str,
    }

    /// The config reloads: generation in effect, applied and refused
    /// reloads, whether the last attempt was applied (alert on 0: the file
    /// on disk is not what runs).
    pub(crate) fn reload_registry(status: &crate::runtime::reload::ReloadStatus) -> Registry {
        let mut reg = Registry::with_prefix("aether_config");
        reg.register(
            "generation",
            "The config in effect: 1 at start, +1 per applied reload",
            gauge(status.generation),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        reloads
            .get_or_create(&ResultLabels { result: "applied" })
            .inc_by(status.reloads);
        reloads
            .get_or_create(&ResultLabels { result: "refused" })
            .inc_by(status.failed_reloads);
        reg.register("reloads", "Config reload attempts by result", reloads);
        reg.register(
            "last_reload_successful",
            "1 unless the last reload attempt was refused",
            gauge(u64::from(
                status.last_attempt.as_ref().is_none_or(|a| a.applied),
            )),
        );
        reg.register(
            "loaded_at_seconds",
            "When the config in effect was loaded (Unix time)",
            gauge(status.loaded_at_unix),
        );
        reg
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct CertLabels {
        server_name: String,
    }

    /// The listener's certificates: when each expires, failed rotations.
    pub(crate) fn tls_registry(store: &crate::tls::CertStore) -> Registry {
        let mut reg = Registry::with_prefix("aether_tls");
        let expiry = Family::<CertLabels, Gauge>::default();
        for (server_name, not_after) in store.expiries() {
            expiry
                .get_or_create(&CertLabels { server_name })
                .set(not_after);
        }
        reg.register(
            "certificate_expiry_timestamp_seconds",
            "When each [[server.tls]] certificate expires (Unix time), by its first server name",
            expiry,
        );
        reg.register(
            "certificate_reload_failures",
            "Changed certificate or key files that could not be loaded (the old certificate stayed in use)",
            counter(store.reload_failures()),
        );
        reg
    }

    fn gauge(v: u64) -> Gauge {
        let g = Gauge::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    }

    fn counter(v: u64) -> Counter {
        let c = Counter::default();
        c.inc_by(v);
        c
    }

    pub(super) fn registry(
        snapshot: &crate::config::Snapshot,
        relay: Option<&crate::relay::Relay>,
    ) -> Registry {
        let mut reg = Registry::with_prefix("aether");
        let serving = Family::<EndpointLabels, Gauge>::default();
        let ejected = Family::<EndpointLabels, Gauge>::default();
        let ejections = Family::<EndpointLabels, Counter>::default();
        let in_flight = Family::<EndpointLabels, Gauge>::default();
        let sent = Family::<EndpointLabels, Counter>::default();
        let failed = Family::<EndpointLabels, Counter>::default();
        let panic = Family::<ServiceLabels, Gauge>::default();
        let retries = Family::<RetryLabels, Counter>::default();
        let h1 = Family::<ConnLabels, Counter>::default();
        for s in snapshot.dispatcher.services() {
            for e in s.endpoints().endpoints.iter() {
                let (new, reused) = e.pool.h1_connections();
                for (connection, n) in [("new", new), ("reused", reused)] {
                    let l = ConnLabels {
                        service: s.target.name().to_owned(),
                        endpoint: e.address.to_string(),
                        connection,
                    };
                    h1.get_or_create(&l).inc_by(n);
                }
            }
            let h = crate::health::ServiceHealth::of(s);
            let svc = || ServiceLabels {
                service: h.service.clone(),
            };
            panic.get_or_create(&svc()).set(i64::from(h.panic));
            for (outcome, n) in [
                ("granted", h.retry_budget.granted),
                ("refused", h.retry_budget.refused),
            ] {
                let l = RetryLabels {
                    service: h.service.clone(),
                    outcome,
                };
                retries.get_or_create(&l).inc_by(n);
            }
            for e in &h.endpoints {
                let l = EndpointLabels {
                    service: h.service.clone(),
                    endpoint: e.address.clone(),
                };
                serving.get_or_create(&l).set(i64::from(e.serving));
                ejected.get_or_create(&l).set(i64::from(e.ejected));
                ejections.get_or_create(&l).inc_by(e.ejections);
                in_flight.get_or_create(&l).set(i64::from(e.in_flight));
                sent.get_or_create(&l).inc_by(e.requests);
                failed.get_or_create(&l).inc_by(e.failures);
            }
        }
        reg.register(
            "upstream_endpoint_serving",
            "1 when the endpoint gets requests (healthy or not yet probed, and not ejected)",
            serving,
        );
        reg.register(
            "upstream_endpoint_ejected",
            "1 while outlier detection has the endpoint ejected",
            ejected,
        );
        reg.register(
            "upstream_ejections",
            "Ejections by outlier detection",
            ejections,
        );
        reg.register(
            "upstream_requests_in_flight",
            "Requests in flight at the endpoint",
            in_flight,
        );
        reg.register(
            "upstream_requests",
            "Requests sent to the endpoint (attempts, retries included)",
            sent,
        );
        reg.register(
            "upstream_failures",
            "Failed exchanges with the endpoint",
            failed,
        );
        reg.register(
            "upstream_service_panic",
            "1 when no endpoint of the service passes its checks",
            panic,
        );
        reg.register(
            "upstream_retries",
            "Retries granted and refused by the service's retry budget",
            retries,
        );
        reg.register(
            "upstream_h1_requests",
            "HTTP/1.1 upstream requests by connection: a new one or a pooled one",
            h1,
        );
        if let Some(relay) = relay {
            let st = relay.status();
            reg.register(
                "relay_allocations",
                "TURN allocations alive",
                gauge(st.allocations as u64),
            );
            reg.register(
                "relay_allocations_opened",
                "TURN allocations made",
                counter(st.allocations_opened),
            );
            reg.register(
                "relay_allocations_closed",
                "TURN allocations deleted",
                counter(st.allocations_closed),
            );
            let packets = Family::<DirectionLabels, Counter>::default();
            let bytes = Family::<DirectionLabels, Counter>::default();
            for (direction, flow) in [("to_peer", st.to_peer), ("to_client", st.to_client)] {
                let l = DirectionLabels { direction };
                packets.get_or_create(&l).inc_by(flow.packets);
                bytes.get_or_create(&l).inc_by(flow.bytes);
            }
            reg.register("relay_packets", "Packets relayed, by direction", packets);
            reg.register_with_unit(
                "relay",
                "Payload bytes relayed, by direction",
                Unit::Bytes,
                bytes,
            );
            let drops = Family::<DropLabels, Counter>::default();
            for (reason, n) in &st.drops {
                drops.get_or_create(&DropLabels { reason }).inc_by(*n);
            }
            reg.register("relay_drops", "Datagrams dropped, by reason", drops);
        }
        reg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[[services]]\nname = \"world-service\"\n[[services.endpoints]]\naddress = \"127.0.0.1:9\"\n[[routes]]\nmethod = \"GET\"\npath = \"/w/{id}\"\nservice = \"world-service\"\nrate_limit = { requests_per_minute = 5, key = \"ip\" }\n";

    fn snapshot() -> crate::config::Snapshot {
        crate::config::parse(CONFIG, std::path::Path::new("t.toml"))
            .unwrap()
            .snapshot
    }

    #[test]
    fn a_rebuilt_route_continues_its_counts() {
        let m = Metrics::new();
        // Two compilations of the same config: what a reload produces.
        let (old, new) = (snapshot(), snapshot());
        let route = |s: &crate::config::Snapshot| Arc::clone(&s.router.routes()[0]);
        let (a, b) = (route(&old), route(&new));
        assert!(!Arc::ptr_eq(&a, &b));
        let ra = m.route(&a, &old.rate_limits.global);
        ra.answered(
            200,
            Duration::from_millis(2),
            Some(Duration::from_millis(1)),
        );
        ra.rate_limited(0, true);
        let rb = m.route(&b, &new.rate_limits.global);
        rb.answered(200, Duration::from_millis(2), None);
        rb.answered(503, Duration::from_millis(2), None);
        rb.rate_limited(0, false);
        // Out of range (a rule the route does not have): ignored, no panic.
        rb.rate_limited(7, false);
        let text = m.encode(&new, None);
        let line = |l: &str| text.lines().any(|t| t == l);
        assert!(
            line(
                "aether_requests_total{route=\"GET /w/{id}\",service=\"world-service\",method=\"GET\",status_class=\"2xx\"} 2"
            ),
            "{text}"
        );
        assert!(line(
            "aether_requests_total{route=\"GET /w/{id}\",service=\"world-service\",method=\"GET\",status_class=\"5xx\"} 1"
        ));
        assert!(line(
            "aether_request_gateway_duration_seconds_count{route=\"GET /w/{id}\"} 3"
        ));
        assert!(line(
            "aether_request_upstream_duration_seconds_count{route=\"GET /w/{id}\"} 1"
        ));
        assert!(line(
            "aether_rate_limit_decisions_total{rule=\"route:GET /w/{id}\",decision=\"allowed\"} 1"
        ));
        assert!(line(
            "aether_rate_limit_decisions_total{rule=\"route:GET /w/{id}\",decision=\"limited\"} 1"
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn status_classes_and_auth_reasons() {
        let m = Metrics::new();
        for s in [101, 204, 302, 404, 599, 999] {
            m.unrouted().answered(s, Duration::ZERO, None);
        }
        m.auth_failure("expired");
        m.auth_failure("expired");
        m.auth_failure("a_reason_added_later");
        let text = m.encode(&crate::config::Snapshot::default(), None);
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx", "other"] {
            let l = format!(
                "aether_requests_total{{route=\"none\",service=\"none\",method=\"none\",status_class=\"{class}\"}} 1"
            );
            assert!(text.lines().any(|t| t == l), "{l}\n{text}");
        }
        assert!(text.contains("aether_auth_failures_total{reason=\"expired\"} 2\n"));
        assert!(text.contains("aether_auth_failures_total{reason=\"a_reason_added_later\"} 1\n"));
    }
}
