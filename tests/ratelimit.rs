//! Rate limits through the running gateway: per route, user, IP and API
//! key, global rules beside route rules, spoofed and trusted
//! `X-Forwarded-For`, the 429 and its headers (on a manual clock, so every
//! figure is exact), and counters shared through a real `redis-server` by
//! two gateways, with Redis killed and brought back mid-test.

mod support;

use std::sync::Arc;
use std::time::Duration;

use aether_gateway::clock::ManualClock;
use http::StatusCode;
use serde_json::json;
use support::jwt::{claims, hs256_with_secret, now};
use support::redis::RedisServer;
use support::*;

const SECRET: &[u8] = b"rate-limit-tests-hs256-secret-0123456789";

/// An HS256 token for `sub`, signed with [`SECRET`].
fn token(sub: &str, role: serde_json::Value) -> String {
    hs256_with_secret(SECRET, &json!({"alg": "HS256"}), &claims(sub, role))
}

/// `[auth]` with one HS256 key whose secret is in `dir`.
fn auth_section(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("hs256.secret");
    std::fs::write(&path, SECRET).unwrap();
    format!(
        "[auth]\nissuer = \"aether-auth\"\naudiences = [\"aether-api\"]\nrequired_claims = [\"sub\"]\nalgorithms = [\"HS256\"]\n[[auth.keys]]\nalgorithm = \"HS256\"\nsecret_file = {:?}\n",
        path.display().to_string()
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

async fn get_h(gw: &aether_gateway::RunningGateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    http1(gw.local_addr(), req("GET", path, headers, "")).await
}

/// The statuses of `n` requests.
async fn statuses(
    gw: &aether_gateway::RunningGateway,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get_h(gw, path, headers).await.status.as_u16());
    }
    out
}

fn limit_headers(r: &Resp) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        r.header("ratelimit-limit"),
        r.header("ratelimit-remaining"),
        r.header("ratelimit-reset"),
    )
}

fn clock() -> Arc<ManualClock> {
    ManualClock::new(now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_limit_answers_429_with_exact_headers() {
    let up = Upstream::start("world").await;
    let clock = clock();
    let gw = gateway_with_clock(
        &format!(
            "{}[[routes]]\nmethod = \"POST\"\npath = \"/api/v1/worlds\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 60, key = \"ip\", burst = 3 }}\n[[routes]]\nmethod = \"GET\"\npath = \"/api/v1/worlds/{{id}}\"\nservice = \"world-service\"\n",
            service_toml("world-service", &[up.addr], "")
        ),
        clock.clone(),
    )
    .await;
    let post = || http1(gw.local_addr(), req("POST", "/api/v1/worlds", &[], "{}"));
    // Burst 3 at one instant: remaining 2, 1, 0; full again in 1, 2, 3 s.
    for (remaining, reset) in [("2", "1"), ("1", "2"), ("0", "3")] {
        let r = post().await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            limit_headers(&r),
            (Some("60"), Some(remaining), Some(reset))
        );
    }
    clock.advance_by(Duration::from_millis(250));
    let r = post().await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // The next request conforms 750 ms from now: Retry-After rounds up to 1.
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(limit_headers(&r), (Some("60"), Some("0"), Some("3")));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "rate limit exceeded");
    assert!(
        r.json()["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(
        up.hits(),
        3,
        "the refused request never reached the upstream"
    );
    // An unlimited route carries no RateLimit headers and is not counted.
    let r = get_h(&gw, "/api/v1/worlds/1", &[]).await;
    assert_eq!(
        (r.status, limit_headers(&r)),
        (StatusCode::OK, (None, None, None))
    );
    // One interval later exactly one more passes.
    clock.advance_by(Duration::from_millis(750));
    assert_eq!(post().await.status, StatusCode::OK);
    assert_eq!(post().await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_have_their_own_counters_and_anonymous_falls_back_to_the_ip() {
    let up = Upstream::start("world").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway_with_clock(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n{}{}[[routes]]\nmethod = \"GET\"\npath = \"/api/v1/me\"\nservice = \"world-service\"\nauth = \"optional\"\nrate_limit = {{ requests_per_minute = 2, key = \"user\" }}\n",
            auth_section(&dir),
            service_toml("world-service", &[up.addr], "")
        ),
        clock(),
    )
    .await;
    let alice = bearer(&token("alice", json!("player")));
    let bob = bearer(&token("bob", json!("player")));
    let alice2 = bearer(&token("alice", json!(["player", "creator"])));
    let me = "/api/v1/me";
    assert_eq!(
        statuses(&gw, me, &[("authorization", &alice)], 3).await,
        [200, 200, 429]
    );
    // Bob is not Alice; a second token of Alice is still Alice.
    assert_eq!(
        statuses(&gw, me, &[("authorization", &bob)], 2).await,
        [200, 200]
    );
    assert_eq!(
        statuses(&gw, me, &[("authorization", &alice2)], 1).await,
        [429]
    );
    // Anonymous requests count by address, not in one shared "no user"
    // bucket (two anonymous clients behind the trusted proxy: two counters),
    // and a user named like an address is someone else.
    let anon_a = [("x-forwarded-for", "198.51.100.1")];
    let anon_b = [("x-forwarded-for", "198.51.100.2")];
    assert_eq!(statuses(&gw, me, &anon_a, 3).await, [200, 200, 429]);
    assert_eq!(statuses(&gw, me, &anon_b, 2).await, [200, 200]);
    let named_ip = bearer(&token("198.51.100.1", json!("player")));
    assert_eq!(
        statuses(&gw, me, &[("authorization", &named_ip)], 1).await,
        [200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_cannot_choose_its_ip_key_but_a_trusted_proxy_can_name_clients() {
    let up = Upstream::start("world").await;
    let route = "[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"world-service\"\nrate_limit = { requests_per_minute = 2, key = \"ip\" }\n";
    let svc = service_toml("world-service", &[up.addr], "");
    // Untrusted peer: X-Forwarded-For is not believed; every request is 127.0.0.1.
    let gw = gateway_with_clock(&format!("{svc}{route}"), clock()).await;
    let mut got = Vec::new();
    for i in 0..3 {
        let xff = format!("203.0.113.{i}");
        got.push(
            get_h(&gw, "/a", &[("x-forwarded-for", &xff)])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(got, [200, 200, 429]);

    // Loopback as a trusted proxy: the right-most untrusted entry is the client.
    let gw = gateway_with_clock(
        &format!("[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n{svc}{route}"),
        clock(),
    )
    .await;
    let a = [("x-forwarded-for", "198.51.100.1, 10.1.1.1")];
    let b = [("x-forwarded-for", "198.51.100.2")];
    // A spoofed left-most entry does not change who the client is.
    let a_spoofing = [("x-forwarded-for", "203.0.113.9, 198.51.100.1, 10.2.2.2")];
    assert_eq!(statuses(&gw, "/a", &a, 2).await, [200, 200]);
    assert_eq!(statuses(&gw, "/a", &b, 2).await, [200, 200]);
    assert_eq!(statuses(&gw, "/a", &a_spoofing, 1).await, [429]);
    assert_eq!(statuses(&gw, "/a", &b, 1).await, [429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_keep_their_own_counters_unless_they_share_a_bucket() {
    let up = Upstream::start("world").await;
    let mut cfg = service_toml("world-service", &[up.addr], "");
    for (path, extra) in [
        ("/a", ""),
        ("/b", ""),
        ("/c", ", bucket = \"shared\""),
        ("/d", ", bucket = \"shared\""),
    ] {
        cfg.push_str(&format!(
            "[[routes]]\nmethod = \"GET\"\npath = \"{path}\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 1, key = \"ip\"{extra} }}\n"
        ));
    }
    let gw = gateway_with_clock(&cfg, clock()).await;
    assert_eq!(statuses(&gw, "/a", &[], 2).await, [200, 429]);
    assert_eq!(statuses(&gw, "/b", &[], 2).await, [200, 429]);
    assert_eq!(statuses(&gw, "/c", &[], 1).await, [200]);
    assert_eq!(statuses(&gw, "/d", &[], 1).await, [429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_and_route_rules_must_all_pass_and_api_keys_count_apart() {
    let up = Upstream::start("world").await;
    let gw = gateway_with_clock(
        &format!(
            "[rate_limit]\nx_ratelimit_headers = true\n[[rate_limit.rules]]\nname = \"per-key\"\nwindow_seconds = 3600\nmax_requests = 4\nkey = \"header:x-api-key\"\n{}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 2, key = \"header:x-api-key\" }}\n[[routes]]\nmethod = \"GET\"\npath = \"/b\"\nservice = \"world-service\"\n",
            service_toml("world-service", &[up.addr], "")
        ),
        clock(),
    )
    .await;
    let k1 = [("x-api-key", "key-1")];
    let k2 = [("x-api-key", "key-2")];
    // The route allows 2 per key; the global rule 4 per key across routes.
    let r = get_h(&gw, "/a", &k1).await;
    assert_eq!(r.status, StatusCode::OK);
    // The tighter of the two rules is reported: the route's (1 left of 2).
    assert_eq!(limit_headers(&r), (Some("2"), Some("1"), Some("30")));
    assert_eq!(
        (
            r.header("x-ratelimit-limit"),
            r.header("x-ratelimit-remaining"),
            r.header("x-ratelimit-reset")
        ),
        (Some("2"), Some("1"), Some("30"))
    );
    assert_eq!(statuses(&gw, "/a", &k1, 2).await, [200, 429]);
    // key-1 has used 3 of the global 4 (the refused one counted there):
    // one more on /b, then the global rule refuses it everywhere.
    assert_eq!(statuses(&gw, "/b", &k1, 2).await, [200, 429]);
    let r = get_h(&gw, "/b", &k1).await;
    assert_eq!(
        r.header("retry-after"),
        Some("900"),
        "one interval of 3600 s / 4"
    );
    // Another key, and no key (counted by address), are untouched.
    assert_eq!(statuses(&gw, "/a", &k2, 1).await, [200]);
    assert_eq!(statuses(&gw, "/b", &[], 1).await, [200]);
}

#[test]
fn the_contract_example_validates() {
    let text = "[rate_limit]\nbackend = \"local\"                        # or \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\non_backend_error = \"local\"               # \"local\" | \"allow\" | \"deny\"\n\n[[services]]\nname = \"world-service\"\n\n[[routes]]\nmethod = \"POST\"\npath = \"/api/v1/worlds\"\nservice = \"world-service\"\nrate_limit = { requests_per_minute = 60, key = \"user\" }   # key: \"user\" | \"ip\" | \"route\" | \"header:x-api-key\"\n";
    let cfg = aether_gateway::config::parse(text, std::path::Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("redis_url is not used")),
        "{:?}",
        cfg.warnings
    );
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("there is no [auth]")),
        "{:?}",
        cfg.warnings
    );
}

#[test]
fn ipv6_clients_count_per_prefix() {
    let mut limits = aether_gateway::config::RateLimits {
        ipv6_prefix: 64,
        ..Default::default()
    };
    let a = limits.client_key("2001:db8:1:2:aaaa::1".parse().unwrap());
    let b = limits.client_key("2001:db8:1:2:bbbb::2".parse().unwrap());
    let other = limits.client_key("2001:db8:1:3::1".parse().unwrap());
    assert_eq!(a, b);
    assert_eq!(a, "2001:db8:1:2::".parse::<std::net::IpAddr>().unwrap());
    assert_ne!(a, other);
    let v4: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    assert_eq!(limits.client_key(v4), v4);
    limits.ipv6_prefix = 128;
    assert_eq!(
        limits.client_key("2001:db8::1".parse().unwrap()),
        "2001:db8::1".parse::<std::net::IpAddr>().unwrap()
    );
}

#[test]
fn rate_limit_config_errors_name_line_and_field() {
    let svc = "[[services]]\nname = \"w\"\n";
    let route = |rl: &str| {
        format!(
            "{svc}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"w\"\nrate_limit = {rl}\n"
        )
    };
    for (text, line, field, msg) in [
        (
            route("{ requests_per_minute = 0 }"),
            7,
            "routes[0].rate_limit.requests_per_minute",
            "at least 1",
        ),
        (
            route("{ requests_per_minute = 5, key = \"users\" }"),
            7,
            "routes[0].rate_limit.key",
            "unknown key",
        ),
        (
            route("{ requests_per_minute = 5, burst = 0 }"),
            7,
            "routes[0].rate_limit.burst",
            "at least 1",
        ),
        (
            route("{ requests_per_minute = 5, per = 1 }"),
            7,
            "routes[0].rate_limit.per",
            "unknown field",
        ),
        (
            "[rate_limit]\nbackend = \"redis\"\n".to_owned(),
            2,
            "rate_limit.backend",
            "needs redis_url",
        ),
        (
            "[rate_limit]\nbackend = \"memcached\"\n".to_owned(),
            2,
            "rate_limit.backend",
            "unknown variant",
        ),
        (
            "[rate_limit]\nbackend = \"redis\"\nredis_url = \"http://x\"\n".to_owned(),
            3,
            "rate_limit.redis_url",
            "not a Redis URL",
        ),
        (
            "[rate_limit]\non_backend_error = \"panic\"\n".to_owned(),
            2,
            "rate_limit.on_backend_error",
            "unknown variant",
        ),
        (
            "[rate_limit]\n[[rate_limit.rules]]\nname = \"a\"\n".to_owned(),
            3,
            "rate_limit.rules[0]",
            "give requests_per_minute",
        ),
        ("[rate_limit]\n[[rate_limit.rules]]\nname = \"a\"\nwindow_seconds = 10000000000\nmax_requests = 1\n".to_owned(), 5, "rate_limit.rules[0].window_seconds", "must be 1 to"),
        (route("{ requests_per_minute = 1, burst = 307445735 }"), 7, "routes[0].rate_limit.burst", "must fit"),
        ("[rate_limit]\nredis_timeout_ms = 100000\n".to_owned(), 2, "rate_limit.redis_timeout_ms", "at most 10000"),
        ("[rate_limit]\nipv6_prefix = 0\n".to_owned(), 2, "rate_limit.ipv6_prefix", "1 to 128"),
        ("[rate_limit]\nkey_prefix = \"\"\n".to_owned(), 2, "rate_limit.key_prefix", "must not be empty"),
    ] {
        let e = aether_gateway::config::parse(&text, std::path::Path::new("t.toml")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (line, field), "{text}\n{e}");
        assert!(e.message.contains(msg), "{text}\n{e}");
    }
    // Two routes in one bucket must agree.
    let text = format!(
        "{svc}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"w\"\nrate_limit = {{ requests_per_minute = 5, bucket = \"x\" }}\n[[routes]]\nmethod = \"GET\"\npath = \"/b\"\nservice = \"w\"\nrate_limit = {{ requests_per_minute = 6, bucket = \"x\" }}\n"
    );
    let e = aether_gateway::config::parse(&text, std::path::Path::new("t.toml")).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_str()),
        (12, "routes[1].rate_limit.bucket"),
        "{e}"
    );
    assert!(e.message.contains("defined by routes[0]"), "{e}");
}

/// Two gateways on one Redis, on the real clock (Redis keeps the time).
async fn redis_pair(
    redis: &RedisServer,
    extra: &str,
    rpm: u32,
) -> (Upstream, [aether_gateway::RunningGateway; 2]) {
    let up = Upstream::start("world").await;
    let cfg = format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 500\nredis_retry_interval_ms = 100\n{extra}\n{}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = {rpm}, key = \"ip\" }}\n[[routes]]\nmethod = \"GET\"\npath = \"/warm\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 100000, key = \"ip\" }}\n",
        redis.url(),
        service_toml("world-service", &[up.addr], "")
    );
    let a = gateway(&cfg).await;
    let b = gateway(&cfg).await;
    (up, [a, b])
}

/// Wait (with a deadline) until the gateway counts in Redis: a request to
/// `/warm` then leaves a key there. The keys are removed again.
async fn until_shared(gw: &aether_gateway::RunningGateway, redis: &RedisServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = get_h(gw, "/warm", &[]).await;
        // 429 only from the fallback of `deny` before the first connection.
        assert!(matches!(r.status.as_u16(), 200 | 429), "{}", r.status);
        if redis.command("DBSIZE").trim() != ":0" {
            assert_eq!(redis.command("FLUSHALL").trim(), "+OK");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never counted in Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_limit_through_redis() {
    let redis = RedisServer::start();
    let (up, [a, b]) = redis_pair(&redis, "", 4).await;
    until_shared(&a, &redis).await;
    until_shared(&b, &redis).await;
    let warm_ups = up.hits();
    // 4 per minute shared: 2 through each gateway, then both refuse.
    assert_eq!(statuses(&a, "/a", &[], 2).await, [200, 200]);
    assert_eq!(statuses(&b, "/a", &[], 2).await, [200, 200]);
    let r = get_h(&a, "/a", &[]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("15"));
    assert_eq!(statuses(&b, "/a", &[], 1).await, [429]);
    assert_eq!(up.hits() - warm_ups, 4);
    // One key in Redis, with a TTL no longer than the window.
    let keys = redis.command("KEYS *");
    assert!(
        keys.contains("aether:rl:{route:GET /a:i:127.0.0.1}"),
        "{keys}"
    );
    let ttl: i64 = redis
        .command("PTTL \"aether:rl:{route:GET /a:i:127.0.0.1}\"")
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_to_local_and_sharing_resumes() {
    let mut redis = RedisServer::start();
    let (_up, [a, b]) = redis_pair(&redis, "on_backend_error = \"local\"", 4).await;
    until_shared(&a, &redis).await;
    until_shared(&b, &redis).await;
    assert_eq!(statuses(&a, "/a", &[], 3).await, [200, 200, 200]);
    assert_eq!(statuses(&b, "/a", &[], 2).await, [200, 429]);
    redis.kill();
    // Each gateway now counts alone, from zero: 4 each.
    assert_eq!(statuses(&a, "/a", &[], 5).await, [200, 200, 200, 200, 429]);
    assert_eq!(statuses(&b, "/a", &[], 5).await, [200, 200, 200, 200, 429]);
    // Redis back (empty, as after a crash): the gateways reconnect by
    // themselves and share one counter again.
    redis.restart();
    until_shared(&a, &redis).await;
    until_shared(&b, &redis).await;
    assert_eq!(statuses(&a, "/a", &[], 2).await, [200, 200]);
    assert_eq!(statuses(&b, "/a", &[], 3).await, [200, 200, 429]);
    assert_eq!(statuses(&a, "/a", &[], 1).await, [429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_in_redis_is_one_clients_problem_not_an_outage() {
    let redis = RedisServer::start();
    let up = Upstream::start("world").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_timeout_ms = 500\non_backend_error = \"deny\"\n{}[[routes]]\nmethod = \"GET\"\npath = \"/warm\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 100000, key = \"ip\" }}\n[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 60, key = \"ip\" }}\n",
        redis.url(),
        service_toml("world-service", &[up.addr], "")
    );
    let gw = gateway(&cfg).await;
    until_shared(&gw, &redis).await;
    // Someone with Redis access (or an OOM) makes one client's key unusable.
    let bad = "aether:rl:{route:GET /a:i:198.51.100.66}";
    assert_eq!(redis.command(&format!("LPUSH \"{bad}\" x")).trim(), ":1");
    let victim = [("x-forwarded-for", "198.51.100.66")];
    let other = [("x-forwarded-for", "198.51.100.77")];
    for _ in 0..5 {
        // The bad key's client gets the fallback (deny), however often it
        // asks in a row ...
        assert_eq!(statuses(&gw, "/a", &victim, 4).await, [429, 429, 429, 429]);
        // ... everyone else is still counted in Redis, not cut off.
        assert_eq!(statuses(&gw, "/a", &other, 1).await, [200]);
    }
    let pttl: i64 = redis
        .command("PTTL \"aether:rl:{route:GET /a:i:198.51.100.77}\"")
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    assert!(
        pttl > 4_000 && pttl <= 5_000,
        "five requests of 1 s each counted in Redis: {pttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slow_answer_is_not_an_outage_three_in_a_row_are() {
    let redis = RedisServer::start();
    let proxy = support::tcp_proxy::TcpProxy::start(redis.addr).await;
    let up = Upstream::start("world").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://{}\"\nredis_timeout_ms = 250\nredis_retry_interval_ms = 600\n{}[[routes]]\nmethod = \"GET\"\npath = \"/warm\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 100000, key = \"ip\" }}\n[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 60, key = \"ip\" }}\n",
        proxy.addr,
        service_toml("world-service", &[up.addr], "")
    );
    let gw = gateway(&cfg).await;
    until_shared(&gw, &redis).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    let in_redis = |ip: &str| {
        redis
            .command(&format!("EXISTS \"aether:rl:{{route:GET /a:i:{ip}}}\""))
            .trim()
            == ":1"
    };
    // Two slow answers (held past the 250 ms timeout): the fallback decides
    // those two requests; Redis is still in use for the next one.
    proxy.hold();
    assert_eq!(
        statuses(&gw, "/a", &from("198.51.100.1"), 2).await,
        [200, 200]
    );
    proxy.release();
    assert_eq!(statuses(&gw, "/a", &from("198.51.100.2"), 1).await, [200]);
    assert!(
        in_redis("198.51.100.2"),
        "one slow answer must not stop sharing"
    );
    // Three in a row: an outage. The next request skips Redis altogether.
    proxy.hold();
    assert_eq!(
        statuses(&gw, "/a", &from("198.51.100.3"), 3).await,
        [200, 200, 200]
    );
    proxy.release();
    assert_eq!(statuses(&gw, "/a", &from("198.51.100.4"), 1).await, [200]);
    assert!(
        !in_redis("198.51.100.4"),
        "during an outage requests must not wait on Redis"
    );
    // After the retry interval one request probes, and sharing resumes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !in_redis("198.51.100.5") {
        assert!(
            std::time::Instant::now() < deadline,
            "sharing never resumed"
        );
        let _ = get_h(&gw, "/a", &from("198.51.100.5")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_with_deny_refuses_and_with_allow_lets_through() {
    let redis = RedisServer::start();
    for (mode, want) in [("deny", 429u16), ("allow", 200)] {
        let mut dead = RedisServer::start();
        dead.kill();
        let (_up, [a, _b]) = redis_pair(&dead, &format!("on_backend_error = \"{mode}\""), 1).await;
        // Never connected: every request follows the fallback, the limit of
        // 1 per minute notwithstanding.
        assert_eq!(
            statuses(&a, "/a", &[], 3).await,
            [want, want, want],
            "{mode}"
        );
    }
    drop(redis);
}
