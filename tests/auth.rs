//! Auth through the running gateway: real signed tokens against real
//! upstreams, a real JWKS endpoint for fetch, refresh, rotation and outage,
//! and the attacks a client at the edge can try.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::jwks_server::JwksServer;
use support::jwt::{TestKey, claims, hs256_with_secret, jwks, now};
use support::*;

const ROUTES: &str = r#"
[[routes]]
method = "POST"
path = "/api/v1/worlds"
service = "world-service"
roles = ["creator"]

[[routes]]
method = "GET"
path = "/api/v1/status"
service = "world-service"
auth = "public"

[[routes]]
method = "GET"
path = "/api/v1/worlds/{world_id}"
service = "world-service"

[[routes]]
method = "GET"
path = "/api/v1/me"
service = "world-service"
auth = "optional"

[[routes]]
method = "GET"
path = "/api/v1/passthrough"
service = "world-service"
forward_authorization = true

[[routes]]
method = "DELETE"
path = "/api/v1/worlds/{world_id}"
service = "world-service"
scopes = ["worlds:write", "worlds:admin"]
"#;

/// The `[auth]` section of the issue's contract over `key_source`.
fn auth_section(key_source: &str, algorithms: &str) -> String {
    format!(
        r#"
[auth]
issuer = "aether-auth"
audiences = ["aether-api"]
required_claims = ["sub", "role"]
algorithms = {algorithms}
leeway_seconds = 30
{key_source}
"#
    )
}

struct Setup {
    up: Upstream,
    gw: aether_gateway::RunningGateway,
    rsa: TestKey,
    ec: TestKey,
    ed: TestKey,
    _dir: tempfile::TempDir,
}

/// Gateway with a JWKS file of an RS256, an ES256 and an EdDSA key.
async fn setup() -> Setup {
    let rsa = TestKey::rsa(Algorithm::RS256, "rsa-1");
    let ec = TestKey::ec(Algorithm::ES256, "ec-1");
    let ed = TestKey::ed25519("ed-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&rsa, &ec, &ed])).unwrap();
    let up = Upstream::start("world-1").await;
    let cfg = format!(
        "{}{}{ROUTES}",
        auth_section(
            &format!("jwks_file = {:?}", path.display().to_string()),
            r#"["RS256", "ES256", "EdDSA"]"#
        ),
        service_toml("world-service", &[up.addr], ""),
    );
    let gw = gateway(&cfg).await;
    Setup {
        up,
        gw,
        rsa,
        ec,
        ed,
        _dir: dir,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn get_with(
    gw: &aether_gateway::RunningGateway,
    path: &str,
    headers: &[(&str, &str)],
) -> Resp {
    http1(gw.local_addr(), req("GET", path, headers, "")).await
}

/// The exact challenge for a refused token.
fn challenge(code: &str, description: &str) -> String {
    format!(
        "Bearer realm=\"aether-gateway\", error=\"{code}\", error_description=\"{description}\""
    )
}

fn assert_refused(r: &Resp, status: StatusCode, code: &str, description: &str) {
    assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("www-authenticate"),
        Some(challenge(code, description).as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], description);
    assert!(
        r.json()["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_non_bearer_credentials_are_401_and_never_reach_the_upstream() {
    let s = setup().await;
    // No bearer credentials at all: the bare challenge (RFC 6750 §3.1), the
    // reason in the body.
    for (auth, why) in [
        (None, "missing bearer token"),
        (Some("Bearer"), "authorization header is not a bearer token"),
        // Trailing whitespace is not part of a field value (RFC 9110 §5.5).
        (
            Some("Bearer "),
            "authorization header is not a bearer token",
        ),
        (
            Some("Basic YWxpY2U6c2VjcmV0"),
            "authorization header is not a bearer token",
        ),
        (
            Some("Token abc.def.ghi"),
            "authorization header is not a bearer token",
        ),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = get_with(&s.gw, "/api/v1/worlds/1", &headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"aether-gateway\""),
            "{auth:?}"
        );
        assert_eq!(r.json()["error"], why, "{auth:?}");
    }
    // A token that is there but bad: the error code says so.
    let r = get_with(
        &s.gw,
        "/api/v1/worlds/1",
        &[("authorization", "Bearer abc.def.ghi")],
    )
    .await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "malformed token: token header is not a JSON object with alg",
    );
    // Two Authorization headers: ambiguous, refused.
    let t = s.rsa.sign(&claims("player-7", json!("player")));
    let r = http1(
        s.gw.local_addr(),
        req(
            "GET",
            "/api/v1/worlds/1",
            &[
                ("authorization", &bearer(&t)),
                ("authorization", &bearer(&t)),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // POST with a body to a protected route: refused before the body is read.
    let r = http1(
        s.gw.local_addr(),
        req("POST", "/api/v1/worlds", &[], &"x".repeat(100_000)),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_forwards_identity_and_drops_authorization() {
    let s = setup().await;
    for key in [&s.rsa, &s.ec, &s.ed] {
        let t = key.sign(&claims("player-7", json!(["player", "creator"])));
        let r = get_with(&s.gw, "/api/v1/worlds/1", &[("authorization", &bearer(&t))]).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}: {:?}", key.alg, r.body);
        assert_eq!(
            r.upstream_header("x-aether-user").as_deref(),
            Some("player-7")
        );
        assert_eq!(
            r.upstream_header("x-aether-roles").as_deref(),
            Some("player,creator")
        );
        assert_eq!(r.upstream_header("authorization"), None);
    }
    // `role` as a single string.
    let t = s.rsa.sign(&claims("player-8", json!("player")));
    let r = get_with(&s.gw, "/api/v1/worlds/1", &[("authorization", &bearer(&t))]).await;
    assert_eq!(
        r.upstream_header("x-aether-roles").as_deref(),
        Some("player")
    );
    // Over HTTP/2 too.
    let mut rq = get_absolute(&format!("http://{}/api/v1/worlds/2", s.gw.local_addr()));
    rq.headers_mut()
        .insert("authorization", bearer(&t).parse().unwrap());
    let r = h2c(s.gw.local_addr(), rq).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.upstream_header("x-aether-user").as_deref(),
        Some("player-8")
    );
    assert_eq!(s.up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_identity_headers_are_stripped_everywhere() {
    let s = setup().await;
    let spoof: &[(&str, &str)] = &[
        ("x-aether-user", "admin"),
        ("X-Aether-User", "root"),
        ("x-aether-roles", "admin,creator"),
    ];
    // Public route: stripped, nothing put in their place.
    let r = get_with(&s.gw, "/api/v1/status", spoof).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-aether-user"), None);
    assert_eq!(r.upstream_header("x-aether-roles"), None);
    // Optional route without a token: stripped.
    let r = get_with(&s.gw, "/api/v1/me", spoof).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-aether-user"), None);
    assert_eq!(r.upstream_header("x-aether-roles"), None);
    // Authenticated route: replaced by what the token says, exactly once.
    let t = s.ec.sign(&claims("player-7", json!("player")));
    let auth = bearer(&t);
    let mut headers = spoof.to_vec();
    headers.push(("authorization", &auth));
    let r = get_with(&s.gw, "/api/v1/worlds/1", &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.upstream_header("x-aether-user").as_deref(),
        Some("player-7")
    );
    assert_eq!(
        r.upstream_header("x-aether-roles").as_deref(),
        Some("player")
    );
    // And a spoofed role does not open a role-gated route.
    let r = http1(
        s.gw.local_addr(),
        req("POST", "/api/v1/worlds", &headers, "{}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_gate_routes_with_403() {
    let s = setup().await;
    let post = |t: String| {
        let addr = s.gw.local_addr();
        async move {
            http1(
                addr,
                req(
                    "POST",
                    "/api/v1/worlds",
                    &[("authorization", &bearer(&t))],
                    "{}",
                ),
            )
            .await
        }
    };
    let r = post(s.rsa.sign(&claims("p", json!(["player"])))).await;
    assert_refused(
        &r,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "token lacks a required role or scope",
    );
    let r = post(s.rsa.sign(&claims("p", json!("creator")))).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = post(s.rsa.sign(&claims("p", json!(["player", "creator"])))).await;
    assert_eq!(r.status, StatusCode::OK);
    // A role is matched whole, not as a substring.
    let r = post(s.rsa.sign(&claims("p", json!("creators")))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(s.up.hits(), 2);

    // Scopes: all of the route's, from a space-separated `scope`.
    let delete = |scope: &str| {
        let mut c = claims("p", json!("player"));
        c["scope"] = json!(scope);
        let t = s.ed.sign(&c);
        let addr = s.gw.local_addr();
        async move {
            http1(
                addr,
                req(
                    "DELETE",
                    "/api/v1/worlds/9",
                    &[("authorization", &bearer(&t))],
                    "",
                ),
            )
            .await
        }
    };
    assert_eq!(
        delete("worlds:read worlds:write").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        delete("worlds:write  worlds:admin").await.status,
        StatusCode::OK
    );
    assert_eq!(
        delete("worlds:writeworlds:admin").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(s.up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_checked_with_the_leeway() {
    let s = setup().await;
    let send = |c: Value| {
        let t = s.rsa.sign(&c);
        let addr = s.gw.local_addr();
        async move { get_with_addr(addr, &t).await }
    };
    let now = now();
    let with = |k: &str, v: Value| {
        let mut c = claims("p", json!("player"));
        c[k] = v;
        c
    };
    // Expired well beyond the 30 s leeway, and within it.
    let r = send(with("exp", json!(now - 90))).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "token expired",
    );
    assert_eq!(
        send(with("exp", json!(now - 5))).await.status,
        StatusCode::OK
    );
    // Not yet valid.
    let r = send(with("nbf", json!(now + 120))).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "token not yet valid",
    );
    assert_eq!(
        send(with("nbf", json!(now + 5))).await.status,
        StatusCode::OK
    );
    // Issuer, audience.
    let r = send(with("iss", json!("someone-else"))).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "token issuer not accepted",
    );
    let r = send(with("aud", json!(["other-api", "billing"]))).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "token audience not accepted",
    );
    assert_eq!(
        send(with("aud", json!(["other-api", "aether-api"])))
            .await
            .status,
        StatusCode::OK
    );
    // Required claims present and non-empty; exp required.
    let r = send(with("sub", json!(""))).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "token lacks required claim sub",
    );
    let mut c = claims("p", json!("player"));
    c.as_object_mut().unwrap().remove("role");
    let r = send(c).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "token lacks required claim role",
    );
    let mut c = claims("p", json!("player"));
    c.as_object_mut().unwrap().remove("exp");
    let r = send(c).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "token has no valid exp claim",
    );
    assert_eq!(s.up.hits(), 3);
}

async fn get_with_addr(addr: std::net::SocketAddr, token: &str) -> Resp {
    http1(
        addr,
        req(
            "GET",
            "/api/v1/worlds/1",
            &[("authorization", &bearer(token))],
            "",
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_tokens_are_refused() {
    let s = setup().await;
    let addr = s.gw.local_addr();
    let good = s.rsa.sign(&claims("p", json!("player")));
    let c = claims("admin", json!("creator"));

    // alg none, any capitalisation, with and without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = base64_json(&json!({"alg": alg, "kid": "rsa-1", "typ": "JWT"}));
        let p = base64_json(&c);
        for t in [format!("{h}.{p}."), format!("{h}.{p}.c2ln")] {
            let r = get_with_addr(addr, &t).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{alg}");
        }
    }
    // RS→HS confusion: HMAC over the RSA public key's PEM and DER.
    let pem = s.rsa.public_pem.clone().unwrap();
    for secret in [pem.as_bytes().to_vec(), pem.trim().as_bytes().to_vec()] {
        let t = hs256_with_secret(&secret, &json!({"alg": "HS256", "kid": "rsa-1"}), &c);
        let r = get_with_addr(addr, &t).await;
        assert_refused(
            &r,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "token algorithm not accepted",
        );
    }
    // A key of an allowed algorithm but another kid's: refused.
    let t =
        s.ec.sign_raw_header(&json!({"alg": "ES256", "kid": "rsa-1"}), &c);
    assert_eq!(
        get_with_addr(addr, &t).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Unknown kid, and an attacker's key offered in jwk / jku / x5u.
    let attacker = TestKey::rsa(Algorithm::RS256, "evil");
    for header in [
        json!({"alg": "RS256", "kid": "evil"}),
        json!({"alg": "RS256", "kid": "evil", "jwk": attacker.jwk}),
        json!({"alg": "RS256", "kid": "evil", "jku": "http://127.0.0.1:9/jwks.json"}),
        json!({"alg": "RS256", "kid": "evil", "x5u": "http://127.0.0.1:9/cert.pem"}),
        json!({"alg": "RS256", "jwk": attacker.jwk}),
    ] {
        let t = attacker.sign_raw_header(&header, &c);
        let r = get_with_addr(addr, &t).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header}");
    }
    // A flipped signature bit.
    let mut bad = good.clone().into_bytes();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let r = get_with_addr(addr, std::str::from_utf8(&bad).unwrap()).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "invalid token signature",
    );
    // Extra dots, missing parts, whitespace inside, junk.
    for t in [
        format!("{good}."),
        format!(".{good}"),
        good.replacen('.', "..", 1),
        good.rsplit_once('.').unwrap().0.to_owned(),
        format!("{} {}", &good[..10], &good[10..]),
        "a.b.c".to_owned(),
        "%%%.%%%.%%%".to_owned(),
    ] {
        let r = get_with_addr(addr, &t).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{t:?}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed token"),
            "{t:?}: {:?}",
            r.json()
        );
    }
    // Oversize: above the token cap (8 KiB) but within the header cap → 401;
    // above the 64 KiB header cap → 431 before auth runs.
    let long = format!("{good}{}", "A".repeat(20_000));
    let r = get_with_addr(addr, &long).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "malformed token: token too long",
    );
    let huge = format!(
        "{}.{}.{}",
        "A".repeat(50_000),
        "A".repeat(50_000),
        "A".repeat(100)
    );
    let r = get_with_addr(addr, &huge).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(s.up.hits(), 0);
    // The gateway is still fine.
    assert_eq!(get_with_addr(addr, &good).await.status, StatusCode::OK);
}

fn base64_json(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_forwarded_only_where_the_route_says() {
    let s = setup().await;
    let t = s.rsa.sign(&claims("p", json!("player")));
    let auth = bearer(&t);
    let r = get_with(&s.gw, "/api/v1/passthrough", &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.upstream_header("authorization").as_deref(),
        Some(auth.as_str())
    );
    assert_eq!(r.upstream_header("x-aether-user").as_deref(), Some("p"));
    // Public routes pass the client's Authorization through untouched.
    let r = get_with(&s.gw, "/api/v1/status", &[("authorization", "Basic eDp5")]).await;
    assert_eq!(
        r.upstream_header("authorization").as_deref(),
        Some("Basic eDp5")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_routes_take_a_token_when_there_is_one() {
    let s = setup().await;
    let r = get_with(&s.gw, "/api/v1/me", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-aether-user"), None);
    let t = s.ed.sign(&claims("player-3", json!("player")));
    let r = get_with(&s.gw, "/api/v1/me", &[("authorization", &bearer(&t))]).await;
    assert_eq!(
        r.upstream_header("x-aether-user").as_deref(),
        Some("player-3")
    );
    // A token that is there but bad is an error, not anonymity.
    let r = get_with(&s.gw, "/api/v1/me", &[("authorization", "Bearer a.b.c")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_keys_and_an_hmac_secret_from_the_environment() {
    let rsa = TestKey::rsa(Algorithm::PS256, "ps-1");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ps.pem");
    std::fs::write(&pem, rsa.public_pem.as_ref().unwrap()).unwrap();
    let var = format!("AETHER_TEST_HS_SECRET_{}", std::process::id());
    let printable = "k".repeat(16) + &"3".repeat(16);
    // SAFETY: this test binary's only reader of this uniquely named variable
    // is the config parser below; nothing else writes the environment.
    unsafe { std::env::set_var(&var, &printable) };
    let up = Upstream::start("world-1").await;
    let keys = format!(
        r#"
[[auth.keys]]
kid = "hs-1"
algorithm = "HS256"
secret_env = "{var}"

[[auth.keys]]
kid = "ps-1"
algorithm = "PS256"
pem_file = {:?}
"#,
        pem.display().to_string()
    );
    let cfg = format!(
        "{}{}{ROUTES}",
        auth_section("", r#"["HS256", "PS256"]"#),
        service_toml("world-service", &[up.addr], "")
    ) + &keys;
    let gw = gateway(&cfg).await;
    let c = claims("hmac-user", json!("player"));
    let t = hs256_with_secret(
        printable.as_bytes(),
        &json!({"alg": "HS256", "kid": "hs-1"}),
        &c,
    );
    let r = get_with_addr(gw.local_addr(), &t).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.upstream_header("x-aether-user").as_deref(),
        Some("hmac-user")
    );
    let t = rsa.sign(&claims("pss-user", json!("player")));
    let r = get_with_addr(gw.local_addr(), &t).await;
    assert_eq!(
        r.upstream_header("x-aether-user").as_deref(),
        Some("pss-user")
    );
    // The HMAC key does not verify a PS256 token's bytes, nor the other way round.
    let t = hs256_with_secret(
        b"not-the-secret-not-the-secret-xx",
        &json!({"alg": "HS256", "kid": "hs-1"}),
        &c,
    );
    assert_eq!(
        get_with_addr(gw.local_addr(), &t).await.status,
        StatusCode::UNAUTHORIZED
    );
    let t = hs256_with_secret(
        printable.as_bytes(),
        &json!({"alg": "HS256", "kid": "ps-1"}),
        &c,
    );
    assert_eq!(
        get_with_addr(gw.local_addr(), &t).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(up.hits(), 2);
}

/// Gateway whose keys come from `jwks` at the given refresh bounds.
async fn remote_setup(
    jwks: &JwksServer,
    min: u64,
    max: u64,
) -> (Upstream, aether_gateway::RunningGateway) {
    let up = Upstream::start("world-1").await;
    let source = format!(
        "jwks_url = \"{}\"\njwks_refresh_min_seconds = {min}\njwks_refresh_max_seconds = {max}\njwks_fetch_timeout_ms = 2000\n",
        jwks.url()
    );
    let cfg = format!(
        "{}{}{ROUTES}",
        auth_section(&source, r#"["RS256", "ES256", "EdDSA"]"#),
        service_toml("world-service", &[up.addr], "")
    );
    (up, gateway(&cfg).await)
}

/// Send until the answer is `want` or the deadline passes; the number of tries.
async fn until_status(
    addr: std::net::SocketAddr,
    token: &str,
    want: StatusCode,
    deadline: Duration,
) -> usize {
    let start = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        let r = get_with_addr(addr, token).await;
        if r.status == want {
            return tries;
        }
        assert!(
            start.elapsed() < deadline,
            "still {} after {tries} tries: {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        // Polling interval of a deadline-bounded wait, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_is_fetched_at_start_and_rotated_keys_work_without_restart() {
    let old = TestKey::rsa(Algorithm::RS256, "2026-11");
    let server = JwksServer::start(jwks(&[&old])).await;
    server.set_cache_control(Some("public, max-age=3600"));
    let (up, gw) = remote_setup(&server, 1, 86_400).await;
    let addr = gw.local_addr();
    let t_old = old.sign(&claims("p", json!("player")));
    until_status(addr, &t_old, StatusCode::OK, Duration::from_secs(10)).await;
    assert_eq!(server.fetches(), 1);

    // The issuer rotates: a new key appears; tokens signed by it work after
    // one refetch, though max-age has an hour to run.
    let new = TestKey::ec(Algorithm::ES256, "2026-12");
    server.set_document(jwks(&[&old, &new]));
    let t_new = new.sign(&claims("q", json!("player")));
    until_status(addr, &t_new, StatusCode::OK, Duration::from_secs(10)).await;
    let after_rotation = server.fetches();
    assert!(
        (2..=3).contains(&after_rotation),
        "{after_rotation} fetches"
    );
    // Known keys cost no fetch.
    for _ in 0..20 {
        assert_eq!(get_with_addr(addr, &t_new).await.status, StatusCode::OK);
        assert_eq!(get_with_addr(addr, &t_old).await.status, StatusCode::OK);
    }
    assert_eq!(server.fetches(), after_rotation);

    // The old key is retired. Known kids never trigger a fetch (max-age has
    // an hour to run), so the retirement is seen at the next refetch, which
    // an unknown kid triggers once the minimum interval has passed.
    server.set_document(jwks(&[&new]));
    let t_other = TestKey::rsa(Algorithm::RS256, "unknown").sign(&claims("z", json!("player")));
    let start = Instant::now();
    while server.fetches() == after_rotation {
        assert_eq!(
            get_with_addr(addr, &t_other).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert!(start.elapsed() < Duration::from_secs(10), "no refetch");
        // Polling interval of a deadline-bounded wait, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.fetches(), after_rotation + 1);
    // Including the old key's token that was verified and cached before.
    let r = get_with_addr(addr, &t_old).await;
    assert_refused(
        &r,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "token signed with an unknown key",
    );
    assert_eq!(get_with_addr(addr, &t_new).await.status, StatusCode::OK);
    assert!(up.hits() >= 43, "{}", up.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kids_cannot_make_the_gateway_hammer_the_jwks_endpoint() {
    let key = TestKey::rsa(Algorithm::RS256, "k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let (up, gw) = remote_setup(&server, 60, 86_400).await;
    let addr = gw.local_addr();
    until_status(
        addr,
        &key.sign(&claims("p", json!("player"))),
        StatusCode::OK,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(server.fetches(), 1);

    let attacker = TestKey::rsa(Algorithm::RS256, "x");
    let c = claims("p", json!("player"));
    let tokens: Vec<String> = (0..200)
        .map(|i| attacker.sign_raw_header(&json!({"alg": "RS256", "kid": format!("kid-{i}")}), &c))
        .collect();
    let mut tasks = Vec::new();
    for chunk in tokens.chunks(25) {
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for t in chunk {
                statuses.push(get_with_addr(addr, &t).await.status);
            }
            statuses
        }));
    }
    for t in tasks {
        for s in t.await.unwrap() {
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
    }
    // The only fetch is the one at start: the last was under 60 s ago.
    assert_eq!(server.fetches(), 1);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_keys_survive_a_jwks_outage_and_max_age_drives_refresh() {
    let key = TestKey::ed25519("ed");
    let server = JwksServer::start(jwks(&[&key])).await;
    // max-age=1 inside [1, 86400]: the gateway refreshes every second.
    server.set_cache_control(Some("max-age=1"));
    let (_up, gw) = remote_setup(&server, 1, 86_400).await;
    let addr = gw.local_addr();
    let t = key.sign(&claims("p", json!("player")));
    until_status(addr, &t, StatusCode::OK, Duration::from_secs(10)).await;
    server.wait_for_fetches(3, Duration::from_secs(10)).await;

    // Outage: fetches fail (and back off) but the installed keys stay.
    server.set_failing(true);
    let before = server.fetches();
    server
        .wait_for_fetches(before + 2, Duration::from_secs(15))
        .await;
    assert_eq!(get_with_addr(addr, &t).await.status, StatusCode::OK);
    // A garbage document is a failure too, not an empty key set.
    server.set_failing(false);
    server.set_document("{\"keys\": 7}".into());
    let before = server.fetches();
    server
        .wait_for_fetches(before + 1, Duration::from_secs(15))
        .await;
    assert_eq!(get_with_addr(addr, &t).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_refresh_bounds_a_long_max_age() {
    let key = TestKey::ed25519("ed");
    let server = JwksServer::start(jwks(&[&key])).await;
    server.set_cache_control(Some("max-age=86400"));
    let (_up, _gw) = remote_setup(&server, 1, 1).await;
    // With max-age a day but jwks_refresh_max_seconds = 1, refreshes keep coming.
    server.wait_for_fetches(3, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_yet_is_503_not_401() {
    let key = TestKey::ed25519("ed");
    let server = JwksServer::start(jwks(&[&key])).await;
    server.set_failing(true);
    let (up, gw) = remote_setup(&server, 60, 86_400).await;
    let t = key.sign(&claims("p", json!("player")));
    let r = get_with_addr(gw.local_addr(), &t).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(r.json()["error"], "authentication temporarily unavailable");
    // Public routes do not depend on keys.
    let r = get_with(&gw, "/api/v1/status", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.hits(), 1);
}

#[test]
fn the_token_is_never_logged() {
    let key = TestKey::rsa(Algorithm::RS256, "k1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&key])).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start("world-1"));
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}{}{ROUTES}",
        auth_section(
            &format!("jwks_file = {:?}", path.display().to_string()),
            r#"["RS256"]"#
        ),
        service_toml("world-service", &[up.addr], ""),
    );
    let gw = GatewayProcess::start_logged(&cfg, "trace");
    let good = key.sign(&claims("player-7", json!("player")));
    let mut expired = claims("player-7", json!("player"));
    expired["exp"] = json!(now() - 3600);
    let expired = key.sign(&expired);
    let (sig_good, sig_expired) = (
        good.rsplit('.').next().unwrap().to_owned(),
        expired.rsplit('.').next().unwrap().to_owned(),
    );
    rt.block_on(async {
        assert_eq!(get_with_addr(gw.addr, &good).await.status, StatusCode::OK);
        assert_eq!(
            get_with_addr(gw.addr, &expired).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get_with_addr(gw.addr, "a.b.c").await.status,
            StatusCode::UNAUTHORIZED
        );
    });
    gw.signal("TERM");
    let mut gw = gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let log = gw.log();
    assert!(log.contains("expired"), "the reason is logged:\n{log}");
    for secret in [&good, &expired, &sig_good, &sig_expired] {
        assert!(
            !log.contains(secret.as_str()),
            "a token leaked into the log"
        );
    }
}

/// A reload that keeps the JWKS URL keeps its keys: tokens are verified at
/// once, though the JWKS server is down by then (a new key set that had to
/// be fetched first would answer 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_fetched_jwks_of_an_unchanged_url() {
    let key = TestKey::rsa(Algorithm::RS256, "2026-11");
    let server = JwksServer::start(jwks(&[&key])).await;
    server.set_cache_control(Some("public, max-age=3600"));
    let up = Upstream::start("world-1").await;
    let source = format!(
        "jwks_url = \"{}\"\njwks_refresh_min_seconds = 60\njwks_fetch_timeout_ms = 2000\n",
        server.url()
    );
    let text = |extra: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nreload_on_change = false\n[admin]\nlisten = \"127.0.0.1:0\"\n{}{}{ROUTES}{extra}",
            auth_section(&source, r#"["RS256"]"#),
            service_toml("world-service", &[up.addr], "")
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text("")).unwrap();
    let cfg = aether_gateway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = aether_gateway::BackendRuntime::from_config(cfg)
        .with_config_file(&path)
        .start()
        .await
        .unwrap();
    let token = key.sign(&claims("p", json!("player")));
    until_status(
        gw.local_addr(),
        &token,
        StatusCode::OK,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(server.fetches(), 1);

    server.set_failing(true);
    let extra = "\n[[routes]]\nmethod = \"GET\"\npath = \"/api/v1/extra\"\nservice = \"world-service\"\nauth = \"public\"\n";
    std::fs::write(&path, text(extra)).unwrap();
    let r = http1(
        gw.admin_addr().unwrap(),
        admin_req("POST", "/admin/reload", &[]),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        get_with_addr(gw.local_addr(), &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        http1(gw.local_addr(), get("/api/v1/extra")).await.status,
        StatusCode::OK
    );
    // The refresh schedule carried on: no fetch at the reload.
    assert_eq!(server.fetches(), 1);
}
