//! Upstreams that stay up, through the running gateway: active health
//! checks (HTTP and TCP), passive ejection on an injected clock, panic
//! routing, consistent hashing, peak-EWMA choice, retries and their budget,
//! the circuit breaker, DNS discovery, and `GET /admin/upstreams`.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aether_gateway::clock::ManualClock;
use http::StatusCode;
use support::dns::{self, DnsServer, srv};
use support::{
    Upstream, admin, admin_req, endpoint_of, gateway, gateway_with_clock, get, http1, req,
    wait_upstreams,
};

const ROUTE: &str = r#"
[[routes]]
methods = ["GET", "POST"]
path = "/api/{*rest}"
service = "world-service"
"#;

/// `[admin]` on an ephemeral port, one service, the catch-all route.
fn config(addrs: &[SocketAddr], service_extra: &str, route_extra: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}{ROUTE}{route_extra}\n",
        support::service_toml("world-service", addrs, service_extra)
    )
}

const FAST_CHECKS: &str = r#"
[services.health_check]
path = "/health"
interval_ms = 20
timeout_ms = 500
unhealthy_threshold = 3
healthy_threshold = 2
jitter_percent = 0
"#;

fn state(v: &serde_json::Value, addr: SocketAddr) -> &serde_json::Value {
    endpoint_of(v, "world-service", addr)
}

async fn served_by(gw: SocketAddr, path: &str) -> String {
    let r = http1(gw, get(path)).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    r.header("x-upstream").expect("x-upstream").to_owned()
}

/// A `header:` hash key reads the request as it goes upstream: a header the
/// gateway sets (`X-Real-IP` here) hashes on the gateway's value, so a
/// client's own copy of it cannot steer its requests to another shard.
#[tokio::test]
async fn a_header_hash_key_hashes_what_the_gateway_sends() {
    let ups = [
        Upstream::start("h0").await,
        Upstream::start("h1").await,
        Upstream::start("h2").await,
        Upstream::start("h3").await,
    ];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let service = "balance = \"consistent_hash\"\nhash_key = \"header:x-real-ip\"\n";
    let routes = "[[routes]]\nmethod = \"GET\"\npath = \"/s/{n}\"\nservice = \"world-service\"\n";
    let gw = gateway(&config(&addrs, service, routes)).await;
    let mut served = std::collections::BTreeSet::new();
    for i in 0..24 {
        let claim = format!("10.0.{i}.{i}");
        let r = http1(
            gw.local_addr(),
            req(
                "GET",
                &format!("/s/{i}"),
                &[("x-real-ip", claim.as_str())],
                "",
            ),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.upstream_header("x-real-ip").as_deref(), Some("127.0.0.1"));
        served.insert(r.header("x-upstream").unwrap().to_owned());
    }
    // Every request hashed on 127.0.0.1: one endpoint took them all (24
    // random claims over four endpoints would land on one with odds 4^-23).
    assert_eq!(served.len(), 1, "{served:?}");
}

#[tokio::test]
async fn http_checks_mark_down_at_the_threshold_and_up_after_the_other() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = gateway(&config(&[a.addr, b.addr], FAST_CHECKS, "")).await;
    wait_upstreams(
        &gw,
        "both healthy",
        |_| {},
        |v| state(v, a.addr)["health"] == "healthy" && state(v, b.addr)["health"] == "healthy",
    )
    .await;

    a.set_health(503, "{\"status\":\"down\"}");
    // Every snapshot on the way: fewer than 3 failures in a row → still up.
    let v = wait_upstreams(
        &gw,
        "a unhealthy",
        |v| {
            let e = state(v, a.addr);
            let fails = e["consecutive_probe_failures"].as_u64().unwrap();
            if fails < 3 {
                assert_eq!(e["health"], "healthy", "down before the threshold: {e}");
            }
        },
        |v| state(v, a.addr)["health"] == "unhealthy",
    )
    .await;
    let e = state(&v, a.addr);
    assert!(
        e["consecutive_probe_failures"].as_u64().unwrap() >= 3,
        "{e}"
    );
    assert_eq!(e["last_probe"]["status"], 503);
    assert_eq!(e["last_probe"]["passed"], false);
    assert_eq!(e["last_probe"]["error"], "status 503 not in 200-399");
    assert_eq!(e["serving"], false);
    assert!(a.health_hits() >= 3);

    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(served_by(gw.local_addr(), "/api/x").await, "b");
    }
    assert_eq!(a.hits(), before, "an unhealthy endpoint got traffic");

    a.set_health(200, "{\"status\":\"ok\"}");
    let v = wait_upstreams(
        &gw,
        "a healthy again",
        |v| {
            let e = state(v, a.addr);
            if e["consecutive_probe_successes"].as_u64().unwrap() < 2 {
                assert_eq!(e["health"], "unhealthy", "up before the threshold: {e}");
            }
        },
        |v| state(v, a.addr)["health"] == "healthy",
    )
    .await;
    assert!(state(&v, a.addr)["probe_latency_ms"].as_f64().unwrap() > 0.0);
    let mut seen = BTreeMap::new();
    for _ in 0..10 {
        *seen
            .entry(served_by(gw.local_addr(), "/api/x").await)
            .or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&5), "round robin resumes: {seen:?}");
}

#[tokio::test]
async fn tcp_checks_follow_an_upstream_that_stops_and_comes_back() {
    let a = Upstream::start("a").await;
    let tcp = FAST_CHECKS.replace("path = \"/health\"", "type = \"tcp\"");
    let gw = gateway(&config(&[a.addr], &tcp, "")).await;
    wait_upstreams(
        &gw,
        "a healthy",
        |_| {},
        |v| state(v, a.addr)["health"] == "healthy",
    )
    .await;
    assert_eq!(a.health_hits(), 0, "a TCP check sends no HTTP");

    a.stop();
    let v = wait_upstreams(
        &gw,
        "a unhealthy",
        |_| {},
        |v| state(v, a.addr)["health"] == "unhealthy",
    )
    .await;
    let err = state(&v, a.addr)["last_probe"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(err.starts_with("connect: "), "{err}");

    let a2 = a.restart().await;
    wait_upstreams(
        &gw,
        "a back",
        |_| {},
        |v| state(v, a.addr)["health"] == "healthy",
    )
    .await;
    assert_eq!(served_by(gw.local_addr(), "/api/x").await, "a");
    assert_eq!(a2.hits(), 1);
}

#[tokio::test]
async fn a_body_check_fails_a_degraded_answer() {
    let a = Upstream::start("a").await;
    let checks = format!("{FAST_CHECKS}body_contains = '\"ok\"'\n");
    let gw = gateway(&config(&[a.addr], &checks, "")).await;
    wait_upstreams(
        &gw,
        "a healthy",
        |_| {},
        |v| state(v, a.addr)["health"] == "healthy",
    )
    .await;
    a.set_health(200, "{\"status\":\"degraded\"}");
    let v = wait_upstreams(
        &gw,
        "a unhealthy",
        |_| {},
        |v| state(v, a.addr)["health"] == "unhealthy",
    )
    .await;
    assert_eq!(
        state(&v, a.addr)["last_probe"]["error"],
        "body does not contain \"\\\"ok\\\"\""
    );
}

#[tokio::test]
async fn consecutive_failures_eject_for_a_time_that_grows() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let clock = ManualClock::new(1_700_000_000);
    let outlier = r#"
[services.outlier_detection]
consecutive_failures = 3
base_ejection_ms = 10000
max_ejection_ms = 100000
"#;
    let gw = gateway_with_clock(&config(&[a.addr, b.addr], outlier, ""), clock.clone()).await;
    let gw_addr = gw.local_addr();
    // 500 is not a gateway error: nothing is retried, every failure counts once.
    a.set_status(500);
    let until_a_saw = |n: usize| {
        let a = a.clone();
        async move {
            for _ in 0..20 {
                if a.hits() == n {
                    return;
                }
                http1(gw_addr, get("/api/x")).await;
            }
            panic!("a saw {} requests, wanted {n}", a.hits());
        }
    };
    until_a_saw(2).await;
    let v = admin(&gw, "/admin/upstreams").await.json();
    assert_eq!(
        state(&v, a.addr)["ejected"],
        false,
        "ejected after 2 failures"
    );
    until_a_saw(3).await;
    let v = admin(&gw, "/admin/upstreams").await.json();
    let e = state(&v, a.addr);
    assert_eq!(e["ejected"], true);
    assert_eq!(e["ejected_for_ms"], 10_000);
    assert_eq!(e["ejections"], 1);
    assert_eq!(e["failures"], 3);
    for _ in 0..10 {
        assert_eq!(served_by(gw_addr, "/api/x").await, "b");
    }
    assert_eq!(a.hits(), 3);

    clock.advance_by(Duration::from_millis(9_999));
    assert_eq!(served_by(gw_addr, "/api/x").await, "b");
    clock.advance_by(Duration::from_millis(1));
    // Back, still failing: ejected again after 3 more, for twice as long.
    until_a_saw(6).await;
    let v = admin(&gw, "/admin/upstreams").await.json();
    let e = state(&v, a.addr);
    assert_eq!(e["ejections"], 2);
    assert_eq!(e["ejected_for_ms"], 20_000);
    clock.advance(10);
    assert_eq!(
        state(&admin(&gw, "/admin/upstreams").await.json(), a.addr)["ejected"],
        true
    );
    clock.advance(10);
    a.set_status(0);
    let mut seen = BTreeMap::new();
    for _ in 0..4 {
        *seen.entry(served_by(gw_addr, "/api/x").await).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&2), "{seen:?}");
}

#[tokio::test]
async fn all_unhealthy_routes_to_all_by_default_or_fails_fast() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set_health(503, "");
    b.set_health(503, "");
    let gw = gateway(&config(&[a.addr, b.addr], FAST_CHECKS, "")).await;
    let v = wait_upstreams(
        &gw,
        "both unhealthy",
        |_| {},
        |v| state(v, a.addr)["health"] == "unhealthy" && state(v, b.addr)["health"] == "unhealthy",
    )
    .await;
    assert_eq!(v["services"][0]["panic"], true);
    let mut seen = BTreeMap::new();
    for _ in 0..40 {
        *seen
            .entry(served_by(gw.local_addr(), "/api/x").await)
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "panic routing uses every endpoint: {seen:?}");

    let c = Upstream::start("c").await;
    c.set_health(503, "");
    let fail = format!("all_unhealthy = \"fail\"\n{FAST_CHECKS}");
    let gw = gateway(&config(&[c.addr], &fail, "")).await;
    wait_upstreams(
        &gw,
        "c unhealthy",
        |_| {},
        |v| state(v, c.addr)["health"] == "unhealthy",
    )
    .await;
    let r = http1(gw.local_addr(), get("/api/x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"], "no healthy upstream endpoint");
    assert_eq!(c.hits(), 0);
}

#[tokio::test]
async fn consistent_hashing_keeps_each_world_on_one_endpoint() {
    let ups = [
        Upstream::start("w0").await,
        Upstream::start("w1").await,
        Upstream::start("w2").await,
        Upstream::start("w3").await,
    ];
    let addrs: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let service =
        format!("balance = \"consistent_hash\"\nhash_key = \"param:world_id\"\n{FAST_CHECKS}");
    let routes = r#"
[[routes]]
method = "GET"
path = "/api/v1/worlds/{world_id}/state"
service = "world-service"
"#;
    let gw = gateway(&config(&addrs, &service, routes)).await;
    let gw_addr = gw.local_addr();
    wait_upstreams(
        &gw,
        "all healthy",
        |_| {},
        |v| addrs.iter().all(|a| state(v, *a)["health"] == "healthy"),
    )
    .await;
    let mut home: HashMap<u32, String> = HashMap::new();
    for w in 0..60 {
        let path = format!("/api/v1/worlds/{w}/state");
        let first = served_by(gw_addr, &path).await;
        for _ in 0..2 {
            assert_eq!(served_by(gw_addr, &path).await, first, "world {w} moved");
        }
        home.insert(w, first);
    }
    let per: BTreeMap<&String, usize> = home.values().fold(BTreeMap::new(), |mut m, h| {
        *m.entry(h).or_insert(0) += 1;
        m
    });
    assert_eq!(per.len(), 4, "every endpoint holds worlds: {per:?}");

    // w2 goes down: its worlds move, no other world does.
    ups[2].set_health(503, "");
    wait_upstreams(
        &gw,
        "w2 unhealthy",
        |_| {},
        |v| state(v, addrs[2])["health"] == "unhealthy",
    )
    .await;
    for (w, h) in &home {
        let now = served_by(gw_addr, &format!("/api/v1/worlds/{w}/state")).await;
        if h == "w2" {
            assert_ne!(now, "w2");
        } else {
            assert_eq!(&now, h, "world {w} moved though its endpoint is up");
        }
    }
}

#[tokio::test]
async fn peak_ewma_sends_most_requests_to_the_fast_endpoint() {
    let fast = Upstream::start("fast").await;
    let slow = Upstream::start("slow").await;
    slow.set_delay_ms(40);
    let gw = gateway(&config(
        &[fast.addr, slow.addr],
        "balance = \"peak_ewma\"\n",
        "",
    ))
    .await;
    for _ in 0..50 {
        served_by(gw.local_addr(), "/api/x").await;
    }
    // Round robin would give the slow one 25; once measured it gets a
    // share only as its estimate decays.
    assert!(slow.hits() <= 5, "slow endpoint got {} of 50", slow.hits());
    assert_eq!(fast.hits() + slow.hits(), 50);
}

const NO_OUTLIER: &str = "[services.outlier_detection]\nenabled = false\n";

#[tokio::test]
async fn idempotent_requests_are_retried_elsewhere_and_posts_only_when_allowed() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set_status(503);
    let gw = gateway(&config(&[a.addr, b.addr], NO_OUTLIER, "")).await;
    for _ in 0..6 {
        assert_eq!(served_by(gw.local_addr(), "/api/x").await, "b");
    }
    assert_eq!(a.hits(), 3, "every other GET went to a first");
    assert_eq!(b.hits(), 6);
    let mut statuses = BTreeMap::new();
    for _ in 0..4 {
        let r = http1(gw.local_addr(), req("POST", "/api/x", &[], "")).await;
        *statuses.entry(r.status.as_u16()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 2), (503, 2)]),
        "POSTs are not retried"
    );

    let c = Upstream::start("c").await;
    let d = Upstream::start("d").await;
    c.set_status(503);
    let gw = gateway(&config(
        &[c.addr, d.addr],
        NO_OUTLIER,
        "retry_non_idempotent = true\n",
    ))
    .await;
    for _ in 0..4 {
        let r = http1(gw.local_addr(), req("POST", "/api/x", &[], "")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-upstream"), Some("d"));
    }
}

#[tokio::test]
async fn the_retry_budget_caps_extra_load_during_an_outage() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set_status(503);
    b.set_status(503);
    let service = format!("retry_budget_percent = 20\nretry_budget_burst = 2\n{NO_OUTLIER}");
    let gw = gateway(&config(&[a.addr, b.addr], &service, "")).await;
    const N: u64 = 50;
    for _ in 0..N {
        let r = http1(gw.local_addr(), get("/api/x")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // The budget's arithmetic, request by request: 0.2 retries earned per
    // request, the balance capped at the burst of 2, one spent per retry.
    let (mut balance, mut expected) = (2000i64, 0u64);
    for _ in 0..N {
        if balance < 2000 {
            balance = (balance + 200).min(2000);
        }
        if balance >= 1000 {
            balance -= 1000;
            expected += 1;
        }
    }
    let v = admin(&gw, "/admin/upstreams").await.json();
    let budget = &v["services"][0]["retry_budget"];
    assert_eq!(budget["granted"], expected);
    assert_eq!(budget["refused"], N - expected);
    assert_eq!((a.hits() + b.hits()) as u64, N + expected);
    assert!(expected <= 2 + N / 5, "{expected} retries for {N} requests");
}

#[tokio::test]
async fn a_full_endpoint_opens_the_circuit_at_once() {
    let a = Upstream::start("a").await;
    a.set_delay_ms(400);
    let gw = gateway(&config(&[a.addr], "max_requests_per_endpoint = 1\n", "")).await;
    let gw_addr = gw.local_addr();
    let first = tokio::spawn(async move { http1(gw_addr, get("/api/slow")).await });
    a.wait_for_hits(1).await;
    let r = http1(gw_addr, get("/api/x")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"], "upstream overloaded: circuit open");
    assert_eq!(
        a.hits(),
        1,
        "the refused request never reached the upstream"
    );
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
    a.set_delay_ms(0);
    assert_eq!(served_by(gw_addr, "/api/x").await, "a");
}

#[tokio::test]
async fn a_slow_attempt_is_retried_after_the_per_try_timeout() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    a.set_delay_ms(5_000);
    let route = "retry_on = [\"timeout\"]\nper_try_timeout_ms = 100\n";
    let gw = gateway(&config(&[a.addr, b.addr], NO_OUTLIER, route)).await;
    for _ in 0..2 {
        assert_eq!(served_by(gw.local_addr(), "/api/x").await, "b");
    }
    assert_eq!(a.hits(), 1);
    let v = admin(&gw, "/admin/upstreams").await.json();
    assert_eq!(state(&v, a.addr)["failures"], 1);
}

#[tokio::test]
async fn dns_discovery_adds_and_removes_endpoints_without_dropping_requests() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let name = "_world._tcp.aether.test";
    let records = |ups: &[&Upstream]| {
        let mut r = Vec::new();
        for u in ups {
            let host = format!("{}.aether.test", u.name);
            r.push(srv(name, 10, 1, u.addr.port(), &host, 1));
            r.push(dns::a(&host, "127.0.0.1", 1));
        }
        r
    };
    let dns = DnsServer::start(records(&[&a, &b])).await;
    let discovery = format!(
        "[services.discovery]\ntype = \"dns\"\nname = \"{name}\"\nrecord = \"srv\"\nnameservers = [\"{}\"]\nmin_ttl_ms = 100\nmax_ttl_ms = 1000\nregion = \"us-east\"\n",
        dns.addr()
    );
    let gw = gateway(&config(&[], &discovery, "")).await;
    let gw_addr = gw.local_addr();
    let v = wait_upstreams(
        &gw,
        "two endpoints",
        |_| {},
        |v| v["services"][0]["endpoints"].as_array().unwrap().len() == 2,
    )
    .await;
    assert_eq!(state(&v, a.addr)["region"], "us-east");
    assert!(
        v["services"][0]["discovery"]
            .as_str()
            .unwrap()
            .starts_with("dns srv")
    );
    let mut seen = BTreeMap::new();
    for _ in 0..4 {
        *seen.entry(served_by(gw_addr, "/api/x").await).or_insert(0) += 1;
    }
    assert_eq!(seen, BTreeMap::from([("a".into(), 2), ("b".into(), 2)]));

    // A slow request to a is in flight when a leaves the records.
    a.set_delay_ms(500);
    let hits = a.hits();
    let mut slow = None;
    for _ in 0..4 {
        let t = tokio::spawn(async move { http1(gw_addr, get("/api/slow")).await });
        // Until this request reached a (slow) or came back from b (fast).
        let reached_a = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if a.hits() > hits {
                    return true;
                }
                if t.is_finished() {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the request went somewhere");
        if reached_a {
            slow = Some(t);
            break;
        }
    }
    let slow = slow.expect("round robin sent one of four requests to a");
    let b_conns: std::collections::BTreeSet<u16> = b.seen().iter().map(|s| s.peer.port()).collect();
    dns.set_records(records(&[&b, &c]));
    wait_upstreams(
        &gw,
        "b and c",
        |_| {},
        |v| {
            let eps = v["services"][0]["endpoints"].as_array().unwrap();
            eps.len() == 2 && eps.iter().any(|e| e["address"] == c.addr.to_string())
        },
    )
    .await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "the in-flight request finished");
    let mut seen = BTreeMap::new();
    for _ in 0..4 {
        *seen.entry(served_by(gw_addr, "/api/x").await).or_insert(0) += 1;
    }
    assert_eq!(seen, BTreeMap::from([("b".into(), 2), ("c".into(), 2)]));
    // b stayed in the records: its pooled connections were kept.
    let after: std::collections::BTreeSet<u16> = b.seen().iter().map(|s| s.peer.port()).collect();
    assert_eq!(after, b_conns, "b's connections were replaced");
}

#[tokio::test]
async fn the_admin_api_answers_json_and_refuses_what_it_does_not_serve() {
    let a = Upstream::start("a").await;
    let gw = gateway(&config(&[a.addr], "", "")).await;
    let r = admin(&gw, "/admin/upstreams").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let svc = &v["services"][0];
    assert_eq!(svc["service"], "world-service");
    assert_eq!(svc["balance"], "round_robin");
    assert_eq!(svc["discovery"], "static");
    assert_eq!(svc["panic"], false);
    let e = state(&v, a.addr);
    assert_eq!(e["health"], "unknown", "no health check configured");
    assert_eq!(e["serving"], true);
    let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "address",
            "consecutive_failures",
            "consecutive_probe_failures",
            "consecutive_probe_successes",
            "ejected",
            "ejected_for_ms",
            "ejections",
            "failures",
            "health",
            "idle_connections",
            "in_flight",
            "last_probe",
            "latency_ms",
            "probe_latency_ms",
            "region",
            "requests",
            "serving",
            "since_unix",
            "weight"
        ]
    );
    served_by(gw.local_addr(), "/api/x").await;
    let v = admin(&gw, "/admin/upstreams").await.json();
    assert_eq!(state(&v, a.addr)["requests"], 1);
    assert_eq!(state(&v, a.addr)["in_flight"], 0);

    let r = admin(&gw, "/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "not found");
    let admin_addr = gw.admin_addr().unwrap();
    let r = http1(admin_addr, admin_req("POST", "/admin/upstreams", &[])).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // Client routes are not on the admin port, and admin paths not on the client port.
    let r = http1(gw.local_addr(), get("/admin/upstreams")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Answers one request per connection with keep-alive, then closes the
    // connection when told (an upstream whose keep-alive timeout ran out
    // while the gateway held the connection idle in its pool).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let close = Arc::new(tokio::sync::Notify::new());
    let (count, closer) = (Arc::clone(&accepted), Arc::clone(&close));
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let closer = Arc::clone(&closer);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                closer.notified().await;
                // Closed without `Connection: close`.
            });
        }
    });
    let gw = gateway(&config(&[addr], NO_OUTLIER, "")).await;
    let r = http1(gw.local_addr(), get("/api/x")).await;
    assert_eq!(r.status, StatusCode::OK);
    wait_upstreams(
        &gw,
        "the connection pooled",
        |_| {},
        |v| state(v, addr)["idle_connections"] == 1,
    )
    .await;
    close.notify_waiters();
    // The gateway saw the close: the pool holds no usable connection.
    wait_upstreams(
        &gw,
        "the pooled connection closed",
        |_| {},
        |v| state(v, addr)["idle_connections"] == 0,
    )
    .await;
    // A POST is never retried: it succeeds only on a fresh connection.
    let r = http1(gw.local_addr(), req("POST", "/api/x", &[], "")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(&r.body[..], b"ok");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}
