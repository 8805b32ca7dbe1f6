//! Geo routing through the running gateway: clients placed by the trusted
//! region header, CIDR rules, a real `.mmdb` GeoIP database (written by the
//! test) and the default; requests reach the upstreams of the expected
//! region; failover, the failback hold, hysteresis, measured latency,
//! stickiness, pinned routes and `GET /admin/geo`.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aether_gateway::RunningGateway;
use aether_gateway::clock::ManualClock;
use http::StatusCode;
use support::mmdb::MmdbBuilder;
use support::{
    Upstream, admin, endpoint_of, gateway, gateway_with_clock, http1, req, wait_upstreams,
};

const FAST_CHECKS: &str = r#"
[services.health_check]
path = "/health"
interval_ms = 20
timeout_ms = 1000
unhealthy_threshold = 2
healthy_threshold = 2
jitter_percent = 0
"#;

/// A service with `us` in us-east and `eu` in eu-west behind a catch-all
/// route, the loopback trusted as a proxy (so tests set the client address
/// with `X-Forwarded-For`), and `[geo]` with the issue's table.
fn config(
    us: SocketAddr,
    eu: SocketAddr,
    service_extra: &str,
    geo_extra: &str,
    routes: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32", "::1/128"]

[admin]
listen = "127.0.0.1:0"

[[services]]
name = "world-service"
{service_extra}
[[services.endpoints]]
address = "{us}"
region = "us-east"
[[services.endpoints]]
address = "{eu}"
region = "eu-west"

[[routes]]
method = "GET"
path = "/api/{{*rest}}"
service = "world-service"
{routes}

[geo]
default_region = "us-east"
region_header = "x-aether-region"
{geo_extra}
[[geo.networks]]
cidr = "198.51.100.0/24"
region = "eu-west"
[[geo.countries]]
country = "DE"
region = "eu-west"
[[geo.countries]]
country = "US"
region = "us-east"
[geo.latency_ms]
us-east = {{ us-east = 10, eu-west = 80 }}
eu-west = {{ us-east = 80, eu-west = 10 }}
"#
    )
}

/// GET `path` as the client `ip` (through the trusted loopback proxy).
async fn get_as(
    gw: &RunningGateway,
    path: &str,
    ip: &str,
    extra: &[(&str, &str)],
) -> support::Resp {
    let mut headers = vec![("x-forwarded-for", ip)];
    headers.extend_from_slice(extra);
    http1(gw.local_addr(), req("GET", path, &headers, "")).await
}

/// Which upstream answered and the `x-aether-region` header.
async fn routed(gw: &RunningGateway, ip: &str) -> (String, String) {
    let r = get_as(gw, "/api/x", ip, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{ip}: {:?}", r.body);
    (
        r.header("x-upstream").expect("x-upstream").to_owned(),
        r.header("x-aether-region").unwrap_or("(none)").to_owned(),
    )
}

fn pair(upstream: &str, region: &str) -> (String, String) {
    (upstream.to_owned(), region.to_owned())
}

/// `client` is served by `upstream` with this `x-aether-region`.
async fn expect(gw: &RunningGateway, client: &str, upstream: &str, region: &str) {
    assert_eq!(routed(gw, client).await, pair(upstream, region), "{client}");
}

#[tokio::test]
async fn clients_reach_the_region_their_address_places_them_in() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("GeoLite2-Country.mmdb");
    MmdbBuilder::new("GeoLite2-Country")
        .country("203.0.113.0/24", "DE", "EU")
        .country("192.0.2.0/24", "US", "NA")
        .country("2001:db8:de::/48", "DE", "EU")
        .country("2001:db8::/32", "US", "NA")
        .country("100.64.0.0/10", "BR", "SA")
        .write(&db);
    let geo = format!("mmdb = {:?}\n", db.display().to_string());
    let gw = gateway(&config(us.addr, eu.addr, "", &geo, "")).await;

    for (client, upstream, region, why) in [
        (
            "198.51.100.7",
            "eu",
            "eu-west",
            "the operator's network rule",
        ),
        ("203.0.113.9", "eu", "eu-west", "GeoIP: Germany"),
        ("192.0.2.1", "us", "us-east", "GeoIP: the US"),
        ("2001:db8:de::77", "eu", "eu-west", "GeoIP: Germany, IPv6"),
        ("2001:db8:1::5", "us", "us-east", "GeoIP: the US, IPv6"),
        (
            "100.64.1.1",
            "us",
            "us-east",
            "a country without a rule: the default",
        ),
        (
            "10.9.8.7",
            "us",
            "us-east",
            "unknown to the database: the default",
        ),
        (
            "203.0.113.200",
            "eu",
            "eu-west",
            "the same prefix again, from the cache",
        ),
    ] {
        assert_eq!(
            routed(&gw, client).await,
            pair(upstream, &format!("{region}; reason=nearest")),
            "{client}: {why}"
        );
    }

    // The region header of a trusted proxy wins over the address.
    let r = get_as(
        &gw,
        "/api/x",
        "192.0.2.1",
        &[("x-aether-region", "eu-west")],
    )
    .await;
    assert_eq!(r.header("x-upstream"), Some("eu"));
    // ... and reaches the upstream, since a trusted proxy set it.
    assert_eq!(
        r.upstream_header("x-aether-region").as_deref(),
        Some("eu-west")
    );
    // A country code there (as CDNs send) goes through the country rules.
    let r = get_as(&gw, "/api/x", "192.0.2.1", &[("x-aether-region", "de")]).await;
    assert_eq!(r.header("x-upstream"), Some("eu"));
}

#[tokio::test]
async fn an_untrusted_region_header_is_ignored_and_not_forwarded() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let text = config(us.addr, eu.addr, "", "", "")
        .replace(r#"trusted_proxies = ["127.0.0.1/32", "::1/128"]"#, "");
    let gw = gateway(&text).await;
    let r = http1(
        gw.local_addr(),
        req("GET", "/api/x", &[("x-aether-region", "eu-west")], ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-upstream"), Some("us"));
    assert_eq!(r.header("x-aether-region"), Some("us-east; reason=nearest"));
    assert_eq!(r.upstream_header("x-aether-region"), None);
    // An untrusted X-Forwarded-For does not move the client either.
    let r = http1(
        gw.local_addr(),
        req("GET", "/api/x", &[("x-forwarded-for", "198.51.100.7")], ""),
    )
    .await;
    assert_eq!(r.header("x-upstream"), Some("us"));
}

async fn wait_health(gw: &RunningGateway, addr: SocketAddr, health: &str) {
    wait_upstreams(
        gw,
        &format!("{addr} {health}"),
        |_| {},
        |v| endpoint_of(v, "world-service", addr)["health"] == health,
    )
    .await;
}

#[tokio::test]
async fn a_down_region_fails_over_and_comes_back_after_the_failback_hold() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let clock = ManualClock::new(1_000_000);
    let gw = gateway_with_clock(
        &config(us.addr, eu.addr, FAST_CHECKS, "failback_seconds = 30\n", ""),
        Arc::clone(&clock) as _,
    )
    .await;
    wait_health(&gw, eu.addr, "healthy").await;
    let eu_client = "198.51.100.7";
    expect(&gw, eu_client, "eu", "eu-west; reason=nearest").await;

    // Every upstream of eu-west stopped (connections refused): the
    // next-closest region.
    eu.stop();
    wait_health(&gw, eu.addr, "unhealthy").await;
    for _ in 0..3 {
        expect(&gw, eu_client, "us", "us-east; reason=failover").await;
    }
    // A us-east client never noticed.
    expect(&gw, "192.0.2.1", "us", "us-east; reason=nearest").await;

    // Back up: not used again until it has been up for failback_seconds.
    let eu = eu.restart().await;
    wait_health(&gw, eu.addr, "healthy").await;
    expect(&gw, eu_client, "us", "us-east; reason=failover").await;
    clock.advance_by(Duration::from_millis(29_999));
    expect(&gw, eu_client, "us", "us-east; reason=failover").await;
    clock.advance_by(Duration::from_millis(1));
    expect(&gw, eu_client, "eu", "eu-west; reason=nearest").await;
    assert_eq!(eu.hits(), 1);

    // Failing its checks (503) is down too.
    eu.set_health(503, "down");
    wait_health(&gw, eu.addr, "unhealthy").await;
    expect(&gw, eu_client, "us", "us-east; reason=failover").await;
}

/// A region's measured probe RTT, once it is within `range` (deadline 15 s).
async fn wait_measured(gw: &RunningGateway, region: &str, range: std::ops::RangeInclusive<u64>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let geo = admin(gw, "/admin/geo").await.json();
        let r = geo["services"][0]["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["region"] == region)
            .unwrap()
            .clone();
        if range.contains(&r["measured_ms"].as_u64().unwrap()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{region} never measured {range:?}: {geo:#}"
        );
        // A poll interval, not synchronisation: the condition is re-read.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hysteresis_keeps_players_where_they_are_until_a_region_is_clearly_better() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    // eu-west clients: eu-west 10 ms, us-east 25 ms, margin 40 ms (wide,
    // so a loaded machine's probe jitter cannot decide the test).
    let text = config(us.addr, eu.addr, FAST_CHECKS, "hysteresis_ms = 40\n", "").replace(
        "eu-west = { us-east = 80, eu-west = 10 }",
        "eu-west = { us-east = 25, eu-west = 10 }",
    );
    let gw = gateway(&text).await;
    wait_health(&gw, eu.addr, "healthy").await;
    let eu_client = "198.51.100.7";
    expect(&gw, eu_client, "eu", "eu-west; reason=nearest").await;

    // eu-west's probes now take ~30 ms: 10 + 30 is worse than us-east's
    // 25 (+ ~0), but by less than the margin: players stay.
    eu.set_health_delay_ms(30);
    wait_measured(&gw, "eu-west", 22..=50).await;
    for _ in 0..3 {
        expect(&gw, eu_client, "eu", "eu-west; reason=hysteresis").await;
    }
    let geo = admin(&gw, "/admin/geo").await.json();
    assert_eq!(
        geo["services"][0]["current"]["eu-west"], "eu-west",
        "{geo:#}"
    );

    // ~150 ms: clearly worse, they move.
    eu.set_health_delay_ms(150);
    wait_measured(&gw, "eu-west", 100..=10_000).await;
    expect(&gw, eu_client, "us", "us-east; reason=nearest").await;
    let geo = admin(&gw, "/admin/geo").await.json();
    assert_eq!(
        geo["services"][0]["current"]["eu-west"], "us-east",
        "{geo:#}"
    );
}

#[tokio::test]
async fn a_full_region_is_skipped_without_a_failback_hold() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let clock = ManualClock::new(1_000_000);
    let gw = gateway_with_clock(
        &config(us.addr, eu.addr, "max_requests_per_endpoint = 1\n", "", ""),
        Arc::clone(&clock) as _,
    )
    .await;
    let eu_client = "198.51.100.7";
    // One slow request fills eu-west's only endpoint ...
    eu.set_delay_ms(60_000);
    let slow = {
        let addr = gw.local_addr();
        tokio::spawn(async move {
            http1(
                addr,
                req(
                    "GET",
                    "/api/slow",
                    &[("x-forwarded-for", "198.51.100.7")],
                    "",
                ),
            )
            .await
        })
    };
    eu.wait_for_hits(1).await;
    // ... so its next players go to us-east for now ...
    expect(&gw, eu_client, "us", "us-east; reason=failover").await;
    // ... and come back as soon as it has room: full is not down.
    slow.abort();
    eu.set_delay_ms(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin(&gw, "/admin/upstreams").await.json();
        if endpoint_of(&v, "world-service", eu.addr)["in_flight"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v:#}");
        // A poll interval, not synchronisation: the condition is re-read.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    expect(&gw, eu_client, "eu", "eu-west; reason=nearest").await;
}

#[tokio::test]
async fn measured_latency_moves_clients_off_a_slow_region() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let gw = gateway(&config(us.addr, eu.addr, FAST_CHECKS, "", "")).await;
    wait_health(&gw, eu.addr, "healthy").await;
    let eu_client = "198.51.100.7";
    expect(&gw, eu_client, "eu", "eu-west; reason=nearest").await;

    // eu-west's endpoint answers its probes 200 ms late: 10 + 200 ms is
    // worse than us-east's 80 ms by more than the margin.
    eu.set_health_delay_ms(200);
    wait_measured(&gw, "eu-west", 121..=10_000).await;
    let geo = admin(&gw, "/admin/geo").await.json();
    let eu_west = &geo["services"][0]["regions"][1];
    assert_eq!(eu_west["region"], "eu-west");
    assert_eq!(
        eu_west["expected_ms"]["eu-west"].as_u64().unwrap(),
        10 + eu_west["measured_ms"].as_u64().unwrap()
    );
    expect(&gw, eu_client, "us", "us-east; reason=nearest").await;
}

#[tokio::test]
async fn a_sticky_cookie_keeps_a_session_in_its_home_region() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let clock = ManualClock::new(1_000_000);
    let pinned = "[[routes]]\nmethod = \"GET\"\npath = \"/us-only/{*rest}\"\nservice = \"world-service\"\nregion = \"us-east\"\n";
    let gw = gateway_with_clock(
        &config(
            us.addr,
            eu.addr,
            FAST_CHECKS,
            "sticky = \"cookie\"\nfailback_seconds = 5\n",
            pinned,
        ),
        Arc::clone(&clock) as _,
    )
    .await;
    wait_health(&gw, eu.addr, "healthy").await;
    let home = "aether-region=eu-west; Path=/; HttpOnly; SameSite=Lax";

    // First request of an eu-west player: the cookie that keeps it there.
    let r = get_as(&gw, "/api/x", "198.51.100.7", &[]).await;
    assert_eq!(r.header("x-upstream"), Some("eu"));
    assert_eq!(r.header("set-cookie"), Some(home));
    // The same player now appears from a us-east address (a roaming
    // phone): the session stays in eu-west, and needs no new cookie.
    let cookie = [("cookie", "aether-region=eu-west")];
    let r = get_as(&gw, "/api/x", "192.0.2.1", &cookie).await;
    assert_eq!(r.header("x-upstream"), Some("eu"));
    assert_eq!(r.header("x-aether-region"), Some("eu-west; reason=sticky"));
    assert_eq!(r.header("set-cookie"), None);
    // A pinned route says nothing about where the session belongs.
    let r = get_as(&gw, "/us-only/x", "198.51.100.7", &cookie).await;
    assert_eq!(r.header("x-aether-region"), Some("us-east; reason=pinned"));
    assert_eq!(r.header("set-cookie"), None);

    // The home region fails: the session fails over, its home stays.
    eu.set_health(503, "down");
    wait_health(&gw, eu.addr, "unhealthy").await;
    let r = get_as(&gw, "/api/x", "198.51.100.7", &cookie).await;
    assert_eq!(
        r.header("x-aether-region"),
        Some("us-east; reason=failover")
    );
    assert_eq!(r.header("set-cookie"), None);
    // Back, but in its failback hold: not yet.
    eu.set_health(200, "ok");
    wait_health(&gw, eu.addr, "healthy").await;
    let r = get_as(&gw, "/api/x", "198.51.100.7", &cookie).await;
    assert_eq!(
        r.header("x-aether-region"),
        Some("us-east; reason=failover")
    );
    clock.advance(5);
    let r = get_as(&gw, "/api/x", "192.0.2.1", &cookie).await;
    assert_eq!(r.header("x-aether-region"), Some("eu-west; reason=sticky"));
    assert_eq!(r.header("set-cookie"), None);

    // A cookie naming an unknown region is ignored (and replaced).
    let r = get_as(
        &gw,
        "/api/x",
        "192.0.2.1",
        &[("cookie", "aether-region=mars")],
    )
    .await;
    assert_eq!(r.header("x-aether-region"), Some("us-east; reason=nearest"));
    assert_eq!(
        r.header("set-cookie"),
        Some("aether-region=us-east; Path=/; HttpOnly; SameSite=Lax")
    );
}

#[tokio::test]
async fn routes_can_pin_a_region_or_turn_geo_routing_off() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let routes = r#"
[[routes]]
method = "GET"
path = "/pinned/{*rest}"
service = "world-service"
region = "eu-west"

[[routes]]
method = "GET"
path = "/anywhere/{*rest}"
service = "world-service"
geo = false
"#;
    let gw = gateway(&config(us.addr, eu.addr, "", "", routes)).await;
    for _ in 0..3 {
        let r = get_as(&gw, "/pinned/x", "192.0.2.1", &[]).await;
        assert_eq!(r.header("x-upstream"), Some("eu"));
        assert_eq!(r.header("x-aether-region"), Some("eu-west; reason=pinned"));
    }
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let r = get_as(&gw, "/anywhere/x", "192.0.2.1", &[]).await;
        assert_eq!(r.header("x-aether-region"), None);
        *seen
            .entry(r.header("x-upstream").unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        seen.get("us"),
        Some(&2),
        "round robin over both regions: {seen:?}"
    );
    assert_eq!(
        seen.get("eu"),
        Some(&2),
        "round robin over both regions: {seen:?}"
    );
}

#[tokio::test]
async fn admin_geo_shows_the_latency_table_and_the_current_choices() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let gw = gateway(&config(us.addr, eu.addr, "", "", "")).await;
    routed(&gw, "198.51.100.7").await;
    routed(&gw, "192.0.2.1").await;
    let r = admin(&gw, "/admin/geo").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["enabled"], true);
    assert_eq!(v["default_region"], "us-east");
    assert_eq!(
        v["latency_ms"],
        serde_json::json!({
            "us-east": {"us-east": 10, "eu-west": 80},
            "eu-west": {"us-east": 80, "eu-west": 10},
        })
    );
    let svc = &v["services"][0];
    assert_eq!(svc["service"], "world-service");
    assert_eq!(
        svc["current"],
        serde_json::json!({"us-east": "us-east", "eu-west": "eu-west"})
    );
    let regions = svc["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[0]["region"], "us-east");
    assert_eq!(regions[0]["endpoints"], 1);
    assert_eq!(regions[0]["serving"], 1);
    assert_eq!(regions[0]["settled"], true);
    // No health checks: nothing measured, the table alone.
    assert_eq!(regions[0]["measured_ms"], 0);
    assert_eq!(
        regions[1]["expected_ms"],
        serde_json::json!({"us-east": 80, "eu-west": 10})
    );
}

#[tokio::test]
async fn the_issue_contract_runs_as_written() {
    let us = Upstream::start("us").await;
    let eu = Upstream::start("eu").await;
    let dir = tempfile::tempdir().unwrap();
    MmdbBuilder::new("GeoLite2-Country")
        .country("203.0.113.0/24", "DE", "EU")
        .write(&dir.path().join("GeoLite2-Country.mmdb"));
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]

[[services]]
name = "world-service"
[[services.endpoints]]
address = "{}"
region = "us-east"
[[services.endpoints]]
address = "{}"
region = "eu-west"

[[routes]]
method = "GET"
path = "/api/v1/worlds/{{world_id}}"
service = "world-service"

[geo]
default_region = "us-east"
mmdb = "GeoLite2-Country.mmdb"           # optional
region_header = "x-aether-region"        # honoured only from [server] trusted_proxies
[[geo.networks]]
cidr = "198.51.100.0/24"
region = "eu-west"
[[geo.countries]]
country = "DE"
region = "eu-west"
[geo.latency_ms]                          # client region -> service region
us-east = {{ us-east = 10, eu-west = 80 }}
eu-west = {{ us-east = 80, eu-west = 10 }}
"#,
        us.addr, eu.addr
    );
    // mmdb is relative to the config file's folder.
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let cfg = aether_gateway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.warnings, Vec::<String>::new());
    let gw = aether_gateway::BackendRuntime::from_config(cfg)
        .start()
        .await
        .unwrap();
    let r = get_as(&gw, "/api/v1/worlds/7", "203.0.113.5", &[]).await;
    assert_eq!(r.header("x-upstream"), Some("eu"));
    let r = get_as(&gw, "/api/v1/worlds/7", "192.0.2.77", &[]).await;
    assert_eq!(r.header("x-upstream"), Some("us"));
}
