//! `[[services]]` (endpoints, balancing, health checks, outlier detection,
//! discovery, circuit breaking, retry budget), route retry settings and
//! `[admin]`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::file::{
    AdminFile, AllUnhealthyFile, BalanceFile, DiscoveryFile, HealthCheckFile, HostFile,
    ProbeKindFile, ProtocolFile, RouteFile, ServiceFile,
};
use super::validate::{ConfigError, Ctx};
use crate::dispatch::retry::{RetryOn, RetryPolicy};
use crate::health::outlier::OutlierDetection;
use crate::health::{HealthCheckConfig, HealthChecker, HttpProbe, Probe};
use crate::router::ServiceTarget;
use crate::upstream::discovery::{DnsConfig, DnsDiscovery, DnsRecord};
use crate::upstream::{
    AllUnhealthy, BalancePolicy, Endpoint, HashKey, HostPolicy, PoolConfig, RetryBudget, Service,
    ServicePolicy, UpstreamProtocol,
};

/// A service from its `[[services]]` entry.
pub(super) fn build_service(
    cx: &Ctx<'_>,
    i: usize,
    svc: &ServiceFile,
    warnings: &mut Vec<String>,
) -> Result<Service, ConfigError> {
    let field = |f: &str| format!("services[{i}].{f}");
    let name = svc.name.get_ref();
    if name.is_empty() {
        return Err(cx.spanned(&svc.name, field("name"), "must not be empty"));
    }
    let protocol = match svc.protocol {
        ProtocolFile::Http1 => UpstreamProtocol::Http1,
        // HTTP/2 over TLS differs from h2c only in the stream underneath.
        ProtocolFile::H2c | ProtocolFile::H2 => UpstreamProtocol::H2c,
    };
    let pool = PoolConfig {
        protocol,
        connect_timeout: Duration::from_millis(svc.connect_timeout_ms.max(1)),
        max_idle: svc.max_idle_connections_per_endpoint,
        idle_timeout: Duration::from_millis(svc.idle_connection_timeout_ms),
        tls: super::tls::service(cx, i, svc, protocol)?,
    };
    let mut endpoints = Vec::with_capacity(svc.endpoints.len());
    for (j, ep) in svc.endpoints.iter().enumerate() {
        let f = field(&format!("endpoints[{j}].address"));
        let address: SocketAddr = ep.address.get_ref().parse().map_err(|_| {
            cx.spanned(
                &ep.address,
                f,
                format!(
                    "{:?} is not an ip:port address (IP literal and a port 1-65535; for host names use [services.discovery] type = \"dns\")",
                    ep.address.get_ref()
                ),
            )
        })?;
        if endpoints
            .iter()
            .any(|e: &Arc<Endpoint>| e.address == address)
        {
            return Err(cx.spanned(
                &ep.address,
                field(&format!("endpoints[{j}].address")),
                format!("duplicate endpoint {address}"),
            ));
        }
        let weight = match &ep.weight {
            None => 1,
            Some(w) if (1..=10_000).contains(w.get_ref()) => *w.get_ref(),
            Some(w) => {
                return Err(cx.spanned(
                    w,
                    field(&format!("endpoints[{j}].weight")),
                    "must be 1-10000",
                ));
            }
        };
        endpoints.push(Arc::new(
            Endpoint::new(
                address,
                ep.region.as_ref().map(|r| r.get_ref().clone()),
                pool.clone(),
            )
            .with_weight(weight),
        ));
    }
    let host = match (&svc.host_rewrite, svc.host) {
        (Some(h), _) => HostPolicy::Fixed(
            http::HeaderValue::from_str(h.get_ref())
                .ok()
                .filter(|_| http::uri::Authority::try_from(h.get_ref().as_str()).is_ok())
                .ok_or_else(|| cx.spanned(h, field("host_rewrite"), "not a valid host[:port]"))?,
        ),
        (None, HostFile::Preserve) => HostPolicy::Preserve,
        (None, HostFile::Endpoint) => HostPolicy::Endpoint,
    };
    let balance = match svc.balance {
        BalanceFile::RoundRobin => BalancePolicy::RoundRobin,
        BalanceFile::LeastRequest => BalancePolicy::LeastRequest,
        BalanceFile::PeakEwma => BalancePolicy::PeakEwma,
        BalanceFile::ConsistentHash => BalancePolicy::ConsistentHash,
    };
    let hash_key = match (&svc.hash_key, balance) {
        (Some(k), BalancePolicy::ConsistentHash) => Some(hash_key(cx, k, &field("hash_key"))?),
        (Some(k), _) => {
            return Err(cx.spanned(
                k,
                field("hash_key"),
                "only used with balance = \"consistent_hash\"",
            ));
        }
        (None, BalancePolicy::ConsistentHash) => {
            return Err(cx.spanned(
                &svc.name,
                field("hash_key"),
                "balance = \"consistent_hash\" needs a hash_key (\"param:<name>\", \"header:<name>\" or \"user\")",
            ));
        }
        (None, _) => None,
    };
    let max_requests = *svc.max_requests_per_endpoint.get_ref();
    if max_requests == 0 {
        return Err(cx.spanned(
            &svc.max_requests_per_endpoint,
            field("max_requests_per_endpoint"),
            "must be at least 1",
        ));
    }
    let percent = *svc.retry_budget_percent.get_ref();
    if percent > 100 {
        return Err(cx.spanned(
            &svc.retry_budget_percent,
            field("retry_budget_percent"),
            "must be 0-100",
        ));
    }
    let policy = ServicePolicy {
        balance,
        hash_key,
        all_unhealthy: match svc.all_unhealthy {
            AllUnhealthyFile::RouteToAll => AllUnhealthy::RouteToAll,
            AllUnhealthyFile::Fail => AllUnhealthy::Fail,
        },
        outlier: outlier(cx, i, svc)?,
        max_requests_per_endpoint: max_requests,
    };
    let mut service = Service::new(ServiceTarget::from_name(name), endpoints, protocol, host)
        .with_pool_config(pool)
        .with_policy(policy)
        .with_retry_budget(RetryBudget::new(percent, *svc.retry_budget_burst.get_ref()))
        .with_clock(Arc::clone(&cx.clock));
    if let Some(hc) = &svc.health_check {
        service = service.with_health_check(health_checker(cx, i, hc)?);
    }
    if let Some(d) = &svc.discovery {
        if !svc.endpoints.is_empty() {
            return Err(cx.spanned(
                d,
                field("discovery"),
                "give either [[services.endpoints]] or [services.discovery], not both",
            ));
        }
        let (source, region) = discovery(cx, i, d)?;
        service = service
            .with_discovery(Arc::new(source))
            .with_discovered_region(region);
    } else if svc.endpoints.is_empty() {
        warnings.push(format!(
            "services[{i}] ({name}) has no endpoints: its routes will answer 503"
        ));
    }
    Ok(service)
}

fn hash_key(cx: &Ctx<'_>, k: &Spanned<String>, field: &str) -> Result<HashKey, ConfigError> {
    let text = k.get_ref();
    let bad = |why: &str| cx.spanned(k, field, format!("{text:?}: {why}"));
    match text.split_once(':') {
        None if text == "user" => Ok(HashKey::User),
        Some(("param", p)) if !p.is_empty() => Ok(HashKey::Param(p.to_owned())),
        Some(("header", h)) => http::HeaderName::from_bytes(h.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| bad("not a valid header name")),
        _ => Err(bad(
            "expected \"param:<name>\", \"header:<name>\" or \"user\"",
        )),
    }
}

fn outlier(
    cx: &Ctx<'_>,
    i: usize,
    svc: &ServiceFile,
) -> Result<Option<OutlierDetection>, ConfigError> {
    let Some(o) = &svc.outlier_detection else {
        return Ok(Some(OutlierDetection::default()));
    };
    let o = o.get_ref();
    if !o.enabled {
        return Ok(None);
    }
    let field = |f: &str| format!("services[{i}].outlier_detection.{f}");
    if *o.consecutive_failures.get_ref() == 0 {
        return Err(cx.spanned(
            &o.consecutive_failures,
            field("consecutive_failures"),
            "must be at least 1 (use enabled = false to turn detection off)",
        ));
    }
    if *o.base_ejection_ms.get_ref() == 0 {
        return Err(cx.spanned(
            &o.base_ejection_ms,
            field("base_ejection_ms"),
            "must be at least 1",
        ));
    }
    if o.max_ejection_ms.get_ref() < o.base_ejection_ms.get_ref() {
        return Err(cx.spanned(
            &o.max_ejection_ms,
            field("max_ejection_ms"),
            format!(
                "must be at least base_ejection_ms ({})",
                o.base_ejection_ms.get_ref()
            ),
        ));
    }
    if *o.max_ejection_percent.get_ref() > 100 {
        return Err(cx.spanned(
            &o.max_ejection_percent,
            field("max_ejection_percent"),
            "must be 0-100",
        ));
    }
    Ok(Some(OutlierDetection {
        consecutive_failures: *o.consecutive_failures.get_ref(),
        base_ejection: Duration::from_millis(*o.base_ejection_ms.get_ref()),
        max_ejection: Duration::from_millis(*o.max_ejection_ms.get_ref()),
        max_ejection_percent: *o.max_ejection_percent.get_ref(),
    }))
}

fn health_checker(
    cx: &Ctx<'_>,
    i: usize,
    hc: &Spanned<HealthCheckFile>,
) -> Result<HealthChecker, ConfigError> {
    let h = hc.get_ref();
    let field = |f: &str| format!("services[{i}].health_check.{f}");
    let interval = match (&h.interval_seconds, &h.interval_ms) {
        (Some(s), None) if *s.get_ref() == 0 => {
            return Err(cx.spanned(s, field("interval_seconds"), "must be at least 1"));
        }
        (Some(s), None) => Duration::from_secs(*s.get_ref()),
        (None, Some(ms)) if *ms.get_ref() < 10 => {
            return Err(cx.spanned(ms, field("interval_ms"), "must be at least 10"));
        }
        (None, Some(ms)) => Duration::from_millis(*ms.get_ref()),
        (None, None) => Duration::from_secs(10),
        (Some(_), Some(ms)) => {
            return Err(cx.spanned(
                ms,
                field("interval_ms"),
                "give either interval_seconds or interval_ms, not both",
            ));
        }
    };
    let positive = |v: &Spanned<u32>, name: &str| {
        if *v.get_ref() == 0 {
            Err(cx.spanned(v, field(name), "must be at least 1"))
        } else {
            Ok(*v.get_ref())
        }
    };
    let unhealthy = positive(&h.unhealthy_threshold, "unhealthy_threshold")?;
    let healthy = positive(&h.healthy_threshold, "healthy_threshold")?;
    let timeout = *h.timeout_ms.get_ref();
    if timeout == 0 {
        return Err(cx.spanned(&h.timeout_ms, field("timeout_ms"), "must be at least 1"));
    }
    if *h.jitter_percent.get_ref() > 50 {
        return Err(cx.spanned(&h.jitter_percent, field("jitter_percent"), "must be 0-50"));
    }
    let probe = match h.kind {
        ProbeKindFile::Tcp => {
            for (name, set) in [
                ("path", h.path.is_some()),
                ("method", h.method.is_some()),
                ("host", h.host.is_some()),
                ("expected_status", h.expected_status.is_some()),
                ("body_contains", h.body_contains.is_some()),
            ] {
                if set {
                    return Err(cx.spanned(hc, field(name), "not used by type = \"tcp\""));
                }
            }
            Probe::Tcp
        }
        ProbeKindFile::Http => Probe::Http(http_probe(cx, h, &field)?),
    };
    let config = HealthCheckConfig {
        interval_seconds: interval.as_secs(),
        timeout_ms: timeout,
        unhealthy_threshold: unhealthy,
    };
    Ok(HealthChecker::new(config)
        .with_interval(interval)
        .with_healthy_threshold(healthy)
        .with_jitter_percent(*h.jitter_percent.get_ref())
        .with_probe(probe))
}

fn http_probe(
    cx: &Ctx<'_>,
    h: &HealthCheckFile,
    field: &dyn Fn(&str) -> String,
) -> Result<HttpProbe, ConfigError> {
    let mut probe = HttpProbe::default();
    if let Some(p) = &h.path {
        probe.path = p
            .get_ref()
            .parse::<http::uri::PathAndQuery>()
            .ok()
            .filter(|_| p.get_ref().starts_with('/'))
            .ok_or_else(|| cx.spanned(p, field("path"), "must be a path starting with '/'"))?;
    }
    if let Some(m) = &h.method {
        probe.method = http::Method::from_bytes(m.get_ref().as_bytes())
            .map_err(|_| cx.spanned(m, field("method"), "not an HTTP method"))?;
    }
    if let Some(host) = &h.host {
        probe.host = Some(
            http::HeaderValue::from_str(host.get_ref())
                .ok()
                .filter(|_| http::uri::Authority::try_from(host.get_ref().as_str()).is_ok())
                .ok_or_else(|| cx.spanned(host, field("host"), "not a valid host[:port]"))?,
        );
    }
    if let Some(range) = &h.expected_status {
        match range.get_ref().as_slice() {
            [lo, hi] if (100..=599).contains(lo) && (lo..=&599).contains(&hi) => {
                probe.expected_status = *lo..=*hi;
            }
            [s] if (100..=599).contains(s) => probe.expected_status = *s..=*s,
            _ => {
                return Err(cx.spanned(
                    range,
                    field("expected_status"),
                    "expected [low, high] (or [status]) with 100 <= low <= high <= 599",
                ));
            }
        }
    }
    probe.body_contains = h.body_contains.clone();
    Ok(probe)
}

fn discovery(
    cx: &Ctx<'_>,
    i: usize,
    d: &Spanned<DiscoveryFile>,
) -> Result<(DnsDiscovery, Option<String>), ConfigError> {
    let dd = d.get_ref();
    let field = |f: &str| format!("services[{i}].discovery.{f}");
    if dd.kind.get_ref() != "dns" {
        return Err(cx.spanned(
            &dd.kind,
            field("type"),
            format!(
                "unknown discovery type {:?} (supported: \"dns\")",
                dd.kind.get_ref()
            ),
        ));
    }
    let record = match dd.record.as_ref().map(|r| r.get_ref().as_str()) {
        None | Some("address") => DnsRecord::Address,
        Some("a") => DnsRecord::Ipv4Only,
        Some("aaaa") => DnsRecord::Ipv6Only,
        Some("srv") => DnsRecord::Srv,
        Some(other) => {
            return Err(cx.spanned(
                dd.record.as_ref().expect("matched Some"),
                field("record"),
                format!("unknown record {other:?} (\"address\", \"a\", \"aaaa\" or \"srv\")"),
            ));
        }
    };
    let port = match (&dd.port, record) {
        (Some(p), DnsRecord::Srv) => {
            return Err(cx.spanned(p, field("port"), "SRV records carry the port"));
        }
        (Some(p), _) if *p.get_ref() == 0 => {
            return Err(cx.spanned(p, field("port"), "must be 1-65535"));
        }
        (Some(p), _) => *p.get_ref(),
        (None, DnsRecord::Srv) => 0,
        (None, _) => {
            return Err(cx.spanned(&dd.name, field("port"), "A/AAAA discovery needs a port"));
        }
    };
    let name = dd.name.get_ref();
    if name.is_empty() || name.len() > 253 {
        return Err(cx.spanned(&dd.name, field("name"), "not a DNS name"));
    }
    let mut nameservers = Vec::new();
    for (j, ns) in dd.nameservers.iter().enumerate() {
        nameservers.push(ns.get_ref().parse::<SocketAddr>().map_err(|_| {
            cx.spanned(
                ns,
                field(&format!("nameservers[{j}]")),
                format!("{:?} is not an ip:port address", ns.get_ref()),
            )
        })?);
    }
    let min_ttl = Duration::from_millis(*dd.min_ttl_ms.get_ref());
    let max_ttl = Duration::from_millis(*dd.max_ttl_ms.get_ref());
    if min_ttl < Duration::from_millis(100) {
        return Err(cx.spanned(&dd.min_ttl_ms, field("min_ttl_ms"), "must be at least 100"));
    }
    if max_ttl < min_ttl {
        return Err(cx.spanned(
            &dd.max_ttl_ms,
            field("max_ttl_ms"),
            "must be at least min_ttl_ms",
        ));
    }
    if *dd.timeout_ms.get_ref() == 0 {
        return Err(cx.spanned(&dd.timeout_ms, field("timeout_ms"), "must be at least 1"));
    }
    let source = DnsDiscovery::new(DnsConfig {
        name: name.clone(),
        port,
        record,
        nameservers,
        min_ttl,
        max_ttl,
        timeout: Duration::from_millis(*dd.timeout_ms.get_ref()),
    })
    .map_err(|e| match e {
        crate::upstream::discovery::DiscoveryError::InvalidName { .. } => {
            cx.spanned(&dd.name, field("name"), e.to_string())
        }
        e => cx.spanned(d, format!("services[{i}].discovery"), e.to_string()),
    })?;
    Ok((source, dd.region.as_ref().map(|r| r.get_ref().clone())))
}

/// A route's retry settings.
pub(super) fn route_retry(
    cx: &Ctx<'_>,
    i: usize,
    r: &RouteFile,
) -> Result<RetryPolicy, ConfigError> {
    let field = |f: &str| format!("routes[{i}].{f}");
    let mut policy = RetryPolicy {
        non_idempotent: r.retry_non_idempotent,
        ..RetryPolicy::default()
    };
    if let Some(n) = &r.retries {
        if usize::from(*n.get_ref()) >= crate::dispatch::retry::MAX_ATTEMPTS {
            return Err(cx.spanned(
                n,
                field("retries"),
                format!(
                    "at most {} (each retry goes to another endpoint)",
                    crate::dispatch::retry::MAX_ATTEMPTS - 1
                ),
            ));
        }
        policy.retries = *n.get_ref();
    }
    if let Some(on) = &r.retry_on {
        let mut set = RetryOn {
            connect_failure: false,
            reset: false,
            gateway_error: false,
            timeout: false,
        };
        for cond in on.get_ref() {
            match cond.as_str() {
                "connect_failure" => set.connect_failure = true,
                "reset" => set.reset = true,
                "gateway_error" => set.gateway_error = true,
                "timeout" => set.timeout = true,
                other => {
                    return Err(cx.spanned(
                        on,
                        field("retry_on"),
                        format!(
                            "unknown condition {other:?} (connect_failure, reset, gateway_error, timeout)"
                        ),
                    ));
                }
            }
        }
        policy.on = set;
    }
    if let Some(t) = &r.per_try_timeout_ms {
        if *t.get_ref() == 0 {
            return Err(cx.spanned(t, field("per_try_timeout_ms"), "must be at least 1"));
        }
        policy.per_try_timeout = Some(Duration::from_millis(*t.get_ref()));
    } else if policy.on.timeout {
        let on = r.retry_on.as_ref().expect("timeout came from retry_on");
        return Err(cx.spanned(
            on,
            field("retry_on"),
            "\"timeout\" needs per_try_timeout_ms (the route timeout ends the request)",
        ));
    }
    Ok(policy)
}

/// The admin listener's address.
pub(super) fn admin_listen(
    cx: &Ctx<'_>,
    admin: &Spanned<AdminFile>,
) -> Result<SocketAddr, ConfigError> {
    let a = admin.get_ref();
    let addr: SocketAddr = a.listen.get_ref().parse().map_err(|_| {
        cx.spanned(
            &a.listen,
            "admin.listen",
            format!("{:?} is not an ip:port address", a.listen.get_ref()),
        )
    })?;
    if !addr.ip().is_loopback() && !a.allow_remote {
        return Err(cx.spanned(
            &a.listen,
            "admin.listen",
            "the admin API can change the gateway: listen on loopback (127.0.0.1 or ::1), or set allow_remote = true (with a token_env, behind your own firewall)",
        ));
    }
    Ok(addr)
}

/// The admin API's bearer token, from the environment variable `token_env` names.
pub(super) fn admin_token(
    cx: &Ctx<'_>,
    admin: &Spanned<AdminFile>,
    warnings: &mut Vec<String>,
) -> Result<Option<crate::admin::AdminToken>, ConfigError> {
    let a = admin.get_ref();
    if let (Some(_), Some(f)) = (&a.token_env, &a.token_file) {
        return Err(cx.spanned(
            f,
            "admin.token_file",
            "give token_env or token_file, not both",
        ));
    }
    if let Some(f) = &a.token_file {
        let path = super::auth::resolve(cx, f.get_ref());
        let text = super::files::read_capped(&path, super::files::MAX_SECRET_BYTES)
            .and_then(|b| {
                String::from_utf8(b).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                })
            })
            .map_err(|e| {
                cx.spanned(
                    f,
                    "admin.token_file",
                    format!(
                        "cannot read {}: {e}",
                        super::validate::secret_path_shown(f.get_ref(), &path)
                    ),
                )
            })?;
        let shown = path.display().to_string();
        return checked_token(cx, f, "admin.token_file", &shown, text.trim())
            .map(|t| Some(crate::admin::AdminToken::from_file(t.expose(), path)));
    }
    let Some(env) = &a.token_env else {
        if a.allow_remote {
            warnings.push(
                "admin: allow_remote without token_env or token_file: anyone who reaches the admin port can reload the config and revoke users".to_owned(),
            );
        }
        return Ok(None);
    };
    let token = std::env::var(env.get_ref()).map_err(|_| {
        cx.spanned(
            env,
            "admin.token_env",
            format!(
                "environment variable {} is not set (or not UTF-8): the admin API would be open",
                super::validate::env_name_shown(env.get_ref())
            ),
        )
    })?;
    checked_token(cx, env, "admin.token_env", env.get_ref(), token.trim()).map(Some)
}

fn checked_token(
    cx: &Ctx<'_>,
    at: &Spanned<String>,
    field: &str,
    source: &str,
    token: &str,
) -> Result<crate::admin::AdminToken, ConfigError> {
    if token.len() < 16 || token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(cx.spanned(
            at,
            field,
            format!(
                "the token in {source} is {} characters: use at least 16 printable ones, no spaces (e.g. `openssl rand -hex 32`)",
                token.len()
            ),
        ));
    }
    Ok(crate::admin::AdminToken::new(token))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::validate::{ConfigError, parse};
    use crate::health::{Probe, Thresholds};
    use crate::router::ServiceTarget;
    use crate::upstream::{BalancePolicy, HashKey};

    fn err(text: &str) -> ConfigError {
        parse(text, Path::new("gw.toml")).expect_err("config should be rejected")
    }

    /// (line, field) of the error, and that the message says `needle`.
    fn at(text: &str, needle: &str) -> (usize, String) {
        let e = err(text);
        assert!(e.message.contains(needle), "{e}");
        (e.line, e.field)
    }

    const SVC: &str = "[[services]]\nname = \"w\"\n";
    const EP: &str = "[[services.endpoints]]\naddress = \"127.0.0.1:9001\"\n";

    #[test]
    fn the_issue_contract_parses_as_written() {
        let text = r#"
[admin]
listen = "127.0.0.1:9901"

[[services]]
name = "world-service"
balance = "consistent_hash"              # "round_robin" | "least_request" | "peak_ewma" | "consistent_hash"
hash_key = "param:world_id"              # or "header:x-session-id", "user"
[services.health_check]
path = "/health"
interval_seconds = 10
timeout_ms = 3000
unhealthy_threshold = 3
healthy_threshold = 2
[[services.endpoints]]
address = "127.0.0.1:9001"
region = "us-east"
"#;
        let cfg = parse(text, Path::new("gw.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.server.admin_listen,
            Some("127.0.0.1:9901".parse().unwrap())
        );
        let svc = cfg
            .snapshot
            .dispatcher
            .service(&ServiceTarget::WorldService)
            .expect("world-service");
        assert_eq!(svc.policy().balance, BalancePolicy::ConsistentHash);
        assert_eq!(
            svc.policy().hash_key,
            Some(HashKey::Param("world_id".into()))
        );
        let hc = svc.health_check().expect("health check");
        assert_eq!(hc.interval(), std::time::Duration::from_secs(10));
        assert_eq!(hc.config().timeout_ms, 3000);
        assert_eq!(
            hc.thresholds(),
            Thresholds {
                unhealthy: 3,
                healthy: 2
            }
        );
        assert!(matches!(hc.probe(), Probe::Http(p) if p.path == "/health"));
        let eps = svc.endpoints();
        assert_eq!(eps.endpoints[0].region.as_deref(), Some("us-east"));
    }

    #[test]
    fn balancing_errors_name_line_and_field() {
        assert_eq!(
            at(
                &format!("{SVC}balance = \"consistent_hash\"\n{EP}"),
                "needs a hash_key"
            ),
            (2, "services[0].hash_key".into())
        );
        assert_eq!(
            at(
                &format!("{SVC}balance = \"consistent_hash\"\nhash_key = \"cookie:s\"\n{EP}"),
                "expected \"param:<name>\""
            ),
            (4, "services[0].hash_key".into())
        );
        assert_eq!(
            at(&format!("{SVC}hash_key = \"user\"\n{EP}"), "only used with"),
            (3, "services[0].hash_key".into())
        );
        assert_eq!(
            at(
                &format!("{SVC}balance = \"fastest\"\n{EP}"),
                "unknown variant"
            ),
            (3, "services[0].balance".into())
        );
        assert_eq!(
            at(&format!("{SVC}{EP}weight = 0\n"), "must be 1-10000"),
            (5, "services[0].endpoints[0].weight".into())
        );
        assert_eq!(
            at(&format!("{SVC}{EP}{EP}"), "duplicate endpoint"),
            (6, "services[0].endpoints[1].address".into())
        );
        assert_eq!(
            at(
                &format!("{SVC}max_requests_per_endpoint = 0\n{EP}"),
                "at least 1"
            ),
            (3, "services[0].max_requests_per_endpoint".into())
        );
    }

    #[test]
    fn health_check_errors_name_line_and_field() {
        let hc = |body: &str| format!("{SVC}[services.health_check]\n{body}{EP}");
        assert_eq!(
            at(&hc("interval_seconds = 0\n"), "at least 1"),
            (4, "services[0].health_check.interval_seconds".into())
        );
        assert_eq!(
            at(&hc("expected_status = [500, 200]\n"), "low <= high"),
            (4, "services[0].health_check.expected_status".into())
        );
        assert_eq!(
            at(
                &hc("type = \"tcp\"\npath = \"/h\"\n"),
                "not used by type = \"tcp\""
            ),
            (3, "services[0].health_check.path".into())
        );
        assert_eq!(
            at(&hc("path = \"health\"\n"), "starting with '/'"),
            (4, "services[0].health_check.path".into())
        );
        assert_eq!(
            at(&hc("unhealthy_threshold = 0\n"), "at least 1"),
            (4, "services[0].health_check.unhealthy_threshold".into())
        );
        assert_eq!(
            at(&hc("interval_seconds = 1\ninterval_ms = 500\n"), "not both"),
            (5, "services[0].health_check.interval_ms".into())
        );
        assert_eq!(
            at(
                &format!("{SVC}[services.outlier_detection]\nconsecutive_failures = 0\n{EP}"),
                "enabled = false"
            ),
            (
                4,
                "services[0].outlier_detection.consecutive_failures".into()
            )
        );
    }

    #[test]
    fn discovery_errors_name_line_and_field() {
        let d = |body: &str| {
            format!("{SVC}[services.discovery]\ntype = \"dns\"\nname = \"w.internal\"\n{body}")
        };
        assert_eq!(
            at(&d(""), "needs a port"),
            (5, "services[0].discovery.port".into())
        );
        assert_eq!(
            at(
                &d("record = \"srv\"\nport = 80\n"),
                "SRV records carry the port"
            ),
            (7, "services[0].discovery.port".into())
        );
        assert_eq!(
            at(
                &d("port = 80\nnameservers = [\"localhost\"]\n"),
                "not an ip:port"
            ),
            (7, "services[0].discovery.nameservers[0]".into())
        );
        assert_eq!(
            at(&format!("{}{EP}", d("port = 80\n")), "not both"),
            (3, "services[0].discovery".into())
        );
        assert_eq!(
            at(
                &format!("{SVC}[services.discovery]\ntype = \"consul\"\nname = \"w\"\n"),
                "supported: \"dns\""
            ),
            (4, "services[0].discovery.type".into())
        );
    }

    #[test]
    fn route_retry_and_admin_errors_name_line_and_field() {
        let route = |body: &str| {
            format!("{SVC}{EP}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"w\"\n{body}")
        };
        assert_eq!(
            at(
                &route("retry_on = [\"5xx\"]\n"),
                "unknown condition \"5xx\""
            ),
            (9, "routes[0].retry_on".into())
        );
        assert_eq!(
            at(&route("retries = 8\n"), "at most 7"),
            (9, "routes[0].retries".into())
        );
        assert_eq!(
            at(
                &route("retry_on = [\"timeout\"]\n"),
                "needs per_try_timeout_ms"
            ),
            (9, "routes[0].retry_on".into())
        );
        assert_eq!(
            at(
                &format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{SVC}{EP}"),
                "loopback"
            ),
            (2, "admin.listen".into())
        );
        let ok = parse(
            &format!("[admin]\nlisten = \"0.0.0.0:9901\"\nallow_remote = true\n{SVC}{EP}"),
            Path::new("gw.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ok.server.admin_listen,
            Some("0.0.0.0:9901".parse().unwrap())
        );
        assert_eq!(
            at(
                &format!("[health]\nx = 1\n{SVC}{EP}"),
                "[services.health_check]"
            ),
            (1, "health".into())
        );
        assert_eq!(
            at(
                &format!(
                    "[server]\nlisten = \"127.0.0.1:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"\n{SVC}{EP}"
                ),
                "needs its own port"
            ),
            (4, "admin.listen".into())
        );
        assert_eq!(
            at(&route("retries = -1\n"), "expected a non-negative integer"),
            (9, "routes[0].retries".into())
        );
        assert_eq!(
            at(
                &format!(
                    "{SVC}[services.discovery]\ntype = \"dns\"\nname = \"not a name!\"\nport = 80\n"
                ),
                "not a name!"
            ),
            (5, "services[0].discovery.name".into())
        );
    }

    #[test]
    fn a_hash_param_missing_from_a_route_is_a_warning() {
        let text = format!(
            "{SVC}balance = \"consistent_hash\"\nhash_key = \"param:world_id\"\n{EP}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"w\"\n[[routes]]\nmethod = \"GET\"\npath = \"/w/{{world_id}}\"\nservice = \"w\"\n"
        );
        let cfg = parse(&text, Path::new("gw.toml")).unwrap_or_else(|e| panic!("{e}"));
        let w: Vec<&String> = cfg
            .warnings
            .iter()
            .filter(|w| w.contains("world_id"))
            .collect();
        assert_eq!(w.len(), 1, "{:?}", cfg.warnings);
        assert!(w[0].starts_with("routes[0] (/a)"), "{}", w[0]);
    }
}
