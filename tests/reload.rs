//! Hot reload and the operator's admin endpoints, against a gateway started
//! from a real file on disk with real upstreams.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aether_gateway::{BackendRuntime, RunningGateway};
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use support::{Upstream, admin_req, get, http1, req};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A gateway running `text` from a file in `dir`, with reloads from it.
async fn from_file(dir: &Path, text: &str) -> (RunningGateway, PathBuf) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = aether_gateway::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let gw = BackendRuntime::from_config(cfg)
        .with_config_file(&path)
        .start()
        .await
        .expect("gateway starts");
    (gw, path)
}

fn base(up: SocketAddr, extra_server: &str, rest: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
{extra_server}
[admin]
listen = "127.0.0.1:0"

[[services]]
name = "world"
[[services.endpoints]]
address = "{up}"

[[routes]]
method = "GET"
path = "/api/v1/worlds/{{id}}"
service = "world"

[[routes]]
method = "GET"
path = "/ws/{{room}}"
service = "world"
{rest}"#
    )
}

const ASSETS_ROUTE: &str = r#"
[[routes]]
method = "GET"
path = "/api/v1/assets/{id}"
service = "world"
"#;

/// Poll until the route the reload adds answers (404 until then).
async fn assets_route_appears(addr: SocketAddr, why: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = http1(addr, get("/api/v1/assets/1")).await;
        if r.status == StatusCode::OK {
            return;
        }
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert!(tokio::time::Instant::now() < deadline, "{}", why());
        // A poll interval, not synchronisation: the condition is re-read.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_reload(gw: &RunningGateway) -> support::Resp {
    http1(
        gw.admin_addr().unwrap(),
        admin_req("POST", "/admin/reload", &[]),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_route_while_a_long_request_and_a_websocket_finish_on_the_old_config() {
    let up = Upstream::start("world-1").await;
    let dir = tempfile::tempdir().unwrap();
    let (gw, path) = from_file(dir.path(), &base(up.addr, "reload_on_change = false", "")).await;
    let addr = gw.local_addr();
    assert_eq!(
        http1(addr, get("/api/v1/assets/1")).await.status,
        StatusCode::NOT_FOUND
    );

    // A WebSocket open across the reload.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/lobby"))
        .await
        .expect("websocket handshake");
    ws.send(Message::text("before")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("before"));

    // A long request in flight across the reload.
    let long = tokio::spawn(async move { http1(addr, get("/api/v1/worlds/1?slow_ms=1500")).await });
    up.wait_for_hits(2).await;
    // A short one while it runs: its pooled connection must survive the reload.
    let short = http1(addr, get("/api/v1/worlds/2")).await;
    assert_eq!(short.status, StatusCode::OK);
    let pooled = up.last().peer;

    std::fs::write(
        &path,
        base(up.addr, "reload_on_change = false", ASSETS_ROUTE),
    )
    .unwrap();
    let r = post_reload(&gw).await;
    assert_eq!(r.status, StatusCode::OK, "{}", body_of(&r));
    let j = r.json();
    assert_eq!(j["applied"], true);
    assert_eq!(j["generation"], 2);
    assert_eq!(j["trigger"], "admin");
    assert_eq!(j["restart_required"], serde_json::json!([]));

    // New requests see the new route; the unchanged service kept its pool.
    let assets = http1(addr, get("/api/v1/assets/9")).await;
    assert_eq!(assets.status, StatusCode::OK, "{}", body_of(&assets));
    assert_eq!(up.last().uri, "/api/v1/assets/9");
    assert_eq!(
        up.last().peer,
        pooled,
        "the unchanged service's idle connection was reused"
    );
    assert!(
        !long.is_finished(),
        "the long request is still in flight after the reload"
    );

    // The old config's request and WebSocket finish.
    let long = long.await.unwrap();
    assert_eq!(long.status, StatusCode::OK, "{}", body_of(&long));
    ws.send(Message::text("after")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert_eq!(echoed.unwrap().unwrap(), Message::text("after"));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_with_its_line_and_the_running_config_stays() {
    let up = Upstream::start("world-1").await;
    let dir = tempfile::tempdir().unwrap();
    let good = base(up.addr, "reload_on_change = false", "");
    let (gw, path) = from_file(dir.path(), &good).await;
    let bad =
        format!("{good}\n[[routes]]\nmethod = \"GET\"\npath = \"/x\"\nservice = \"nowhere\"\n");
    let line = bad.lines().position(|l| l.contains("nowhere")).unwrap() + 1;
    std::fs::write(&path, &bad).unwrap();

    let r = post_reload(&gw).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", body_of(&r));
    let j = r.json();
    assert_eq!(j["applied"], false);
    assert_eq!(j["generation"], 1);
    let error = j["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("gateway.toml:{line}:")) && error.contains("routes[2].service"),
        "{error}"
    );
    assert_eq!(
        http1(gw.local_addr(), get("/api/v1/worlds/1")).await.status,
        StatusCode::OK
    );

    let c = support::admin(&gw, "/admin/config").await.json();
    assert_eq!(c["generation"], 1);
    assert_eq!(c["reloads"], 0);
    assert_eq!(c["failed_reloads"], 1);
    assert_eq!(c["last_attempt"]["applied"], false);
    assert_eq!(c["last_attempt"]["error"], error);
    // The config shown is the one in effect, not the refused file.
    assert_eq!(c["config"]["routes"].as_array().unwrap().len(), 2);

    // And the metrics an alert fires on.
    let metrics = body_of(&support::admin(&gw, "/metrics").await);
    for line in [
        "aether_config_generation 1\n",
        "aether_config_reloads_total{result=\"applied\"} 0\n",
        "aether_config_reloads_total{result=\"refused\"} 1\n",
        "aether_config_last_reload_successful 0\n",
    ] {
        assert!(metrics.contains(line), "{line:?} not in\n{metrics}");
    }
    assert!(metrics.ends_with("# EOF\n"));
    std::fs::write(&path, &good).unwrap();
    assert_eq!(post_reload(&gw).await.status, StatusCode::OK);
    let metrics = body_of(&support::admin(&gw, "/metrics").await);
    for line in [
        "aether_config_generation 2\n",
        "aether_config_reloads_total{result=\"applied\"} 1\n",
        "aether_config_last_reload_successful 1\n",
    ] {
        assert!(metrics.contains(line), "{line:?} not in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_rate_limit_rules_keep_their_counts_and_changed_ones_start_afresh() {
    let up = Upstream::start("world-1").await;
    let dir = tempfile::tempdir().unwrap();
    let limited = |rpm: u32, extra: &str| {
        format!(
            "{}\n[[routes]]\nmethod = \"GET\"\npath = \"/api/v1/limited\"\nservice = \"world\"\nrate_limit = {{ requests_per_minute = {rpm}, key = \"ip\" }}\n{extra}",
            base(up.addr, "reload_on_change = false", "")
        )
    };
    let (gw, path) = from_file(dir.path(), &limited(2, "")).await;
    let addr = gw.local_addr();
    for _ in 0..2 {
        assert_eq!(
            http1(addr, get("/api/v1/limited")).await.status,
            StatusCode::OK
        );
    }
    std::fs::write(&path, limited(2, ASSETS_ROUTE)).unwrap();
    assert_eq!(post_reload(&gw).await.status, StatusCode::OK);
    let r = http1(addr, get("/api/v1/limited")).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the rule kept its count"
    );
    assert_eq!(r.header("ratelimit-limit"), Some("2"));

    std::fs::write(&path, limited(3, ASSETS_ROUTE)).unwrap();
    assert_eq!(post_reload(&gw).await.status, StatusCode::OK);
    let r = http1(addr, get("/api/v1/limited")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a changed rule starts with a full bucket"
    );
    assert_eq!(r.header("ratelimit-limit"), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reloaded_by_itself_and_listener_changes_wait_for_a_restart() {
    let up = Upstream::start("world-1").await;
    let dir = tempfile::tempdir().unwrap();
    let watch = "reload_check_interval_ms = 100";
    let (gw, path) = from_file(dir.path(), &base(up.addr, watch, "")).await;
    let addr = gw.local_addr();
    // Also a listener change: applied at restart only, and said so.
    let changed = base(up.addr, watch, ASSETS_ROUTE).replacen(
        "[server]\n",
        "[server]\nmax_connections = 77\n",
        1,
    );
    std::fs::write(&path, changed).unwrap();
    assets_route_appears(addr, || "the change was not picked up".to_owned()).await;
    let c = support::admin(&gw, "/admin/config").await.json();
    assert_eq!(c["generation"], 2);
    assert_eq!(c["last_attempt"]["trigger"], "file change");
    assert_eq!(
        c["last_attempt"]["restart_required"],
        serde_json::json!(["server.max_connections"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_service_keeps_its_health_state_over_a_reload() {
    let up = Upstream::start("world-1").await;
    let dir = tempfile::tempdir().unwrap();
    let text = |rest: &str| {
        base(up.addr, "reload_on_change = false", rest).replace(
            "name = \"world\"\n",
            "name = \"world\"\n[services.health_check]\ninterval_ms = 50\nhealthy_threshold = 1\n",
        )
    };
    let (gw, path) = from_file(dir.path(), &text("")).await;
    let before = support::wait_upstreams(
        &gw,
        "three passing probes",
        |_| {},
        |v| {
            support::endpoint_of(v, "world", up.addr)["consecutive_probe_successes"]
                .as_u64()
                .unwrap()
                >= 3
        },
    )
    .await;
    let n = support::endpoint_of(&before, "world", up.addr)["consecutive_probe_successes"]
        .as_u64()
        .unwrap();
    std::fs::write(&path, text(ASSETS_ROUTE)).unwrap();
    assert_eq!(post_reload(&gw).await.status, StatusCode::OK);
    let after = support::admin(&gw, "/admin/upstreams").await.json();
    let e = support::endpoint_of(&after, "world", up.addr);
    assert!(
        e["consecutive_probe_successes"].as_u64().unwrap() >= n,
        "the probe history carried on: {e}"
    );
    assert_eq!(e["health"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_when_every_upstream_is_down_and_back() {
    let up = Upstream::start("world-1").await;
    let text = base(up.addr, "", "").replace(
        "name = \"world\"\n",
        "name = \"world\"\n[services.health_check]\ntype = \"tcp\"\ninterval_ms = 50\nunhealthy_threshold = 1\nhealthy_threshold = 1\n",
    );
    let gw = support::gateway(&text).await;
    let admin = gw.admin_addr().unwrap();
    let ready = |want: StatusCode| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let r = http1(admin, get("/readyz")).await;
            if r.status == want {
                return r.json();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz stayed {}: {}",
                r.status,
                body_of(&r)
            );
            // A poll interval, not synchronisation: the condition is re-read.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let j = ready(StatusCode::OK).await;
    assert_eq!(j["ready"], true);
    assert_eq!(j["serving_endpoints"], 1);
    up.stop();
    let j = ready(StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(j["ready"], false);
    assert_eq!(j["serving_endpoints"], 0);
    let _up = up.restart().await;
    assert_eq!(ready(StatusCode::OK).await["serving_endpoints"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_everything_but_the_probes() {
    let up = Upstream::start("world-1").await;
    // SAFETY: a variable no other test reads; set before the config reads it.
    unsafe { std::env::set_var("AETHER_TEST_ADMIN_TOKEN_GUARD", "s3cret-admin-token-0123") };
    let text = base(up.addr, "", "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"AETHER_TEST_ADMIN_TOKEN_GUARD\"\n",
    );
    let gw = support::gateway(&text).await;
    let admin = gw.admin_addr().unwrap();
    for path in [
        "/admin/upstreams",
        "/admin/config",
        "/admin/geo",
        "/metrics",
    ] {
        let r = http1(admin, get(path)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"aether-gateway admin\"")
        );
        let wrong = http1(
            admin,
            req(
                "GET",
                path,
                &[("authorization", "Bearer s3cret-admin-token-0124")],
                "",
            ),
        )
        .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
        let right = http1(
            admin,
            req(
                "GET",
                path,
                &[("authorization", "Bearer s3cret-admin-token-0123")],
                "",
            ),
        )
        .await;
        assert_eq!(right.status, StatusCode::OK, "{path}");
    }
    let r = http1(admin, admin_req("POST", "/admin/reload", &[])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            http1(admin, get(path)).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    // The token is in no answer.
    let c = http1(
        admin,
        req(
            "GET",
            "/admin/config",
            &[("authorization", "bearer s3cret-admin-token-0123")],
            "",
        ),
    )
    .await;
    assert_eq!(c.status, StatusCode::OK);
    assert!(
        !body_of(&c).contains("s3cret-admin-token"),
        "{}",
        body_of(&c)
    );
}

#[test]
fn a_token_env_that_is_not_set_or_too_short_is_a_config_error() {
    let text = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"AETHER_TEST_ADMIN_TOKEN_UNSET\"\n";
    let e = aether_gateway::config::parse(text, Path::new("g.toml")).unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (3, "admin.token_env"));
    assert!(
        e.message
            .contains("AETHER_TEST_ADMIN_TOKEN_UNSET is not set"),
        "{e}"
    );
    // SAFETY: a variable no other test reads.
    unsafe { std::env::set_var("AETHER_TEST_ADMIN_TOKEN_SHORT", "short") };
    let text = text.replace("UNSET", "SHORT");
    let e = aether_gateway::config::parse(&text, Path::new("g.toml")).unwrap_err();
    assert_eq!(e.field, "admin.token_env");
    assert!(e.message.contains("at least 16"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_dump_redacts_secrets() {
    let up = Upstream::start("world-1").await;
    let text = base(
        up.addr,
        "",
        "\n[rate_limit]\nbackend = \"local\"\nredis_url = \"redis://gw:hunter2@127.0.0.1:6379/0\"\n",
    );
    let gw = support::gateway(&text).await;
    let c = support::admin(&gw, "/admin/config").await;
    assert_eq!(c.status, StatusCode::OK);
    assert!(!body_of(&c).contains("hunter2"), "{}", body_of(&c));
    let j = c.json();
    assert_eq!(
        j["config"]["rate_limit"]["redis_url"],
        "redis://gw:<redacted>@127.0.0.1:6379/0"
    );
    assert_eq!(j["config"]["services"][0]["name"], "world");
    assert_eq!(j["generation"], 1);
    // Started from text, not a file: a reload says there is nothing to read.
    let r = post_reload(&gw).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("no file to reload"),
        "{}",
        body_of(&r)
    );
}

fn body_of(r: &support::Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The built binary: SIGHUP reloads (and does not end the process);
/// `--version` prints the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    let up = Upstream::start("world-1").await;
    let text = base(up.addr, "reload_on_change = false", "");
    let mut gw = support::GatewayProcess::start_logged(&text, "info");
    assert_eq!(
        http1(gw.addr, get("/api/v1/assets/1")).await.status,
        StatusCode::NOT_FOUND
    );
    std::fs::write(
        gw.config_path(),
        base(up.addr, "reload_on_change = false", ASSETS_ROUTE),
    )
    .unwrap();
    gw.signal("HUP");
    assets_route_appears(gw.addr, || format!("SIGHUP did not reload: {}", gw.log())).await;
    let log = gw.log();
    assert!(log.contains("SIGHUP: reloading the config"), "{log}");
    assert!(log.contains("config reloaded"), "{log}");
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "still running after SIGHUP"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aether-gateway"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "aether-gateway {} (commit {}; features: {})",
            env!("CARGO_PKG_VERSION"),
            env!("AETHER_GIT_COMMIT"),
            env!("AETHER_FEATURES")
        )
    );
}

/// `aether-gateway reload`: the file checked here, then the running
/// gateway asked (with the config's admin token); the exit status says
/// what the gateway did, which a SIGHUP cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_command_reports_what_the_gateway_did() {
    let up = Upstream::start("world-1").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "0123456789abcdef0123\n").unwrap();
    let with_token = |rest: &str| {
        base(up.addr, "reload_on_change = false", rest).replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"",
        )
    };
    let (gw, path) = from_file(dir.path(), &with_token("")).await;
    let admin = gw.admin_addr().unwrap().to_string();
    let run = |path: &Path| {
        let path = path.to_owned();
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_aether-gateway"))
                .args(["reload", "--admin", &admin, "--config"])
                .arg(path)
                .output()
                .unwrap()
        })
    };
    // Applied: exit 0, the gateway's JSON answer on stdout.
    std::fs::write(&path, with_token(ASSETS_ROUTE)).unwrap();
    let out = run(&path).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["applied"], true, "{answer}");
    assert_eq!(
        http1(gw.local_addr(), get("/api/v1/assets/1")).await.status,
        StatusCode::OK
    );
    // Valid as a file (check says ok), refused by the running gateway: exit 1.
    let no_routes = with_token("")
        .split("[[routes]]")
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(&path, no_routes).unwrap();
    let out = run(&path).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the gateway refused the file and keeps its running config"),
        "{stderr}"
    );
    assert!(stderr.contains("no [[routes]]"), "{stderr}");
    // Invalid: refused here, with its line, before the gateway is asked (exit 2).
    std::fs::write(&path, "[server]\nlisten = 8080\n").unwrap();
    let out = run(&path).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("gateway.toml:2"), "{stderr}");
    // The running config is the applied one throughout.
    assert_eq!(
        http1(gw.local_addr(), get("/api/v1/assets/1")).await.status,
        StatusCode::OK
    );
    // Another file than the one the gateway runs: checked here, but a
    // reload would re-read the running one, so nothing is asked.
    let other = dir.path().join("other.toml");
    std::fs::write(&other, with_token(ASSETS_ROUTE)).unwrap();
    let out = run(&other).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is not the file the running gateway reads"),
        "{stderr}"
    );
    // Without the token the API refuses: the command says so (exit 1).
    std::fs::write(
        &path,
        base(up.addr, "reload_on_change = false", ASSETS_ROUTE),
    )
    .unwrap();
    let out = run(&path).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the credentials (401"), "{stderr}");
    assert!(
        stderr.contains("sets no token_env or token_file"),
        "{stderr}"
    );
    // A rotated token_file: the command presents the new token, which the
    // running gateway admits from the file, and the reload makes it the
    // only one.
    std::fs::write(&path, with_token(ASSETS_ROUTE)).unwrap();
    let old = "Bearer 0123456789abcdef0123";
    std::fs::write(
        dir.path().join("admin.token.new"),
        "fedcba9876543210fedcba\n",
    )
    .unwrap();
    std::fs::rename(
        dir.path().join("admin.token.new"),
        dir.path().join("admin.token"),
    )
    .unwrap();
    let out = run(&path).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let with = |t: &str| admin_req("GET", "/admin/config", &[("authorization", t)]);
    let admin_addr = gw.admin_addr().unwrap();
    assert_eq!(
        http1(admin_addr, with(old)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http1(admin_addr, with("Bearer fedcba9876543210fedcba"))
            .await
            .status,
        StatusCode::OK
    );
}

/// The relay's credentials follow a reload: a rotated REST secret (a file
/// whose content changed) and a changed static password apply at once,
/// and the relay's listener stays where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_the_relays_secrets_and_static_users() {
    use aether_gateway::relay::auth::rest_password;
    use support::turn_client::{Creds, TurnClient};
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("turn.secret");
    std::fs::write(&secret, "reload-test-secret-one-0123456789").unwrap();
    let text = |password: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nreload_on_change = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [relay]\nlisten = \"127.0.0.1:0\"\nrealm = \"aether\"\nrelay_address = \"127.0.0.1\"\n\
             relay_ports = \"50000-59999\"\nallowed_peers = [\"127.0.0.1/32\"]\nsecret_file = {:?}\n\
             [[relay.users]]\nname = \"alice\"\npassword = \"{password}\"\n",
            secret.display().to_string()
        )
    };
    let (gw, path) = from_file(dir.path(), &text("first-password")).await;
    let relay = gw.relay().unwrap().udp_addr();
    let user = format!("{}:player-1", support::jwt::now() + 600);
    let mut c = TurnClient::udp(relay, Creds::new("alice", "first-password")).await;
    assert!(c.allocate().await.success);
    let old_rest = rest_password(b"reload-test-secret-one-0123456789", &user);
    let mut c = TurnClient::udp(relay, Creds::new(&user, &old_rest)).await;
    assert!(c.allocate().await.success);

    std::fs::write(&secret, "reload-test-secret-two-9876543210").unwrap();
    std::fs::write(&path, text("second-password")).unwrap();
    let r = post_reload(&gw).await;
    assert_eq!(r.status, StatusCode::OK, "{}", body_of(&r));
    assert_eq!(r.json()["restart_required"], serde_json::json!([]));

    let mut c = TurnClient::udp(relay, Creds::new("alice", "first-password")).await;
    assert_eq!(c.allocate().await.code, 401);
    let mut c = TurnClient::udp(relay, Creds::new("alice", "second-password")).await;
    assert!(c.allocate().await.success);
    let mut c = TurnClient::udp(relay, Creds::new(&user, &old_rest)).await;
    assert_eq!(c.allocate().await.code, 401);
    let new_rest = rest_password(b"reload-test-secret-two-9876543210", &user);
    let mut c = TurnClient::udp(relay, Creds::new(&user, &new_rest)).await;
    assert!(c.allocate().await.success);
    assert_eq!(gw.relay().unwrap().udp_addr(), relay);
}

/// Without a token, a loopback admin API refuses what a web page could
/// send it: an `Origin` (cross-site request forgery) or a `Host` that is a
/// name (DNS rebinding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_api_without_a_token_refuses_web_pages() {
    let up = Upstream::start("world-1").await;
    let gw = support::gateway(&base(up.addr, "", "")).await;
    let admin = gw.admin_addr().unwrap();
    let call = |method: &'static str,
                path: &'static str,
                headers: Vec<(&'static str, &'static str)>| async move {
        http1(admin, req(method, path, &headers, "")).await
    };
    let r = call(
        "POST",
        "/admin/reload",
        vec![("host", "127.0.0.1"), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", body_of(&r));
    assert!(r.json()["error"].as_str().unwrap().contains("Origin"));
    let r = call(
        "GET",
        "/admin/config",
        vec![("host", "rebind.evil.example:9901")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", body_of(&r));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("DNS rebinding")
    );
    for host in [
        "127.0.0.1:9901",
        "localhost:9901",
        "[::1]:9901",
        "LOCALHOST",
    ] {
        let r = call("GET", "/admin/config", vec![("host", host)]).await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
    }
    for hosts in [
        vec![("host", "localhost:80@rebind.evil.example")],
        vec![("host", "127.0.0.1"), ("host", "rebind.evil.example")],
        vec![("host", "[::1")],
    ] {
        let r = call("GET", "/admin/config", hosts.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{hosts:?}");
    }
    // Probes are answered whatever the Host.
    let r = call("GET", "/healthz", vec![("host", "rebind.evil.example")]).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// A reload is refused when the file is empty, has lost its routes (a
/// write in progress) or would open a token-guarded admin API; a token in a
/// `token_file` is rotated by a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_files_and_dropped_tokens_are_refused_and_token_files_rotate() {
    let up = Upstream::start("world-1").await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "first-token-0123456789\n").unwrap();
    let guarded = |text: String| {
        text.replacen(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n",
            1,
        )
    };
    let good = guarded(base(up.addr, "reload_on_change = false", ""));
    let (gw, path) = from_file(dir.path(), &good).await;
    let admin = gw.admin_addr().unwrap();
    let reload = |bearer: &'static str| async move {
        let auth = format!("Bearer {bearer}");
        http1(
            admin,
            admin_req("POST", "/admin/reload", &[("authorization", &auth)]),
        )
        .await
    };
    for (text, why) in [
        (String::new(), "the file is empty"),
        ("# nothing yet\n".to_owned(), "the file is empty"),
        (
            guarded(
                "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
                    .to_owned(),
            ),
            "no [[routes]]",
        ),
        (
            base(up.addr, "reload_on_change = false", ""),
            "never opens a running admin API",
        ),
    ] {
        std::fs::write(&path, &text).unwrap();
        let r = reload("first-token-0123456789").await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{text:?}: {}",
            body_of(&r)
        );
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(why), "{text:?}: {error}");
        assert_eq!(
            http1(gw.local_addr(), get("/api/v1/worlds/1")).await.status,
            StatusCode::OK
        );
    }
    // Rotation: the file's new token is the one from now on.
    std::fs::write(&path, &good).unwrap();
    std::fs::write(&token, "second-token-0123456789\n").unwrap();
    assert_eq!(
        reload("first-token-0123456789").await.status,
        StatusCode::OK
    );
    assert_eq!(
        reload("first-token-0123456789").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        reload("second-token-0123456789").await.status,
        StatusCode::OK
    );
}

/// A service whose settings change is rebuilt, but keeps what its active
/// checks said: a down endpoint stays down (not "unknown" and served) until
/// the new checker's first probe, which here takes 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_service_keeps_its_endpoints_health_verdicts() {
    let up = Upstream::start("world-1").await;
    // Accepts and never answers: a probe of it times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let text = |probe_timeout_ms: u32| {
        base(up.addr, "reload_on_change = false", "").replace(
            "name = \"world\"\n",
            &format!(
                "name = \"world\"\n[services.health_check]\ninterval_ms = 50\ntimeout_ms = {probe_timeout_ms}\nunhealthy_threshold = 1\nhealthy_threshold = 1\n[[services.endpoints]]\naddress = \"{silent_addr}\"\n"
            ),
        )
    };
    let (gw, path) = from_file(dir.path(), &text(100)).await;
    support::wait_upstreams(
        &gw,
        "the silent endpoint marked down",
        |_| {},
        |v| support::endpoint_of(v, "world", silent_addr)["health"] == "unhealthy",
    )
    .await;
    std::fs::write(&path, text(10_000)).unwrap();
    assert_eq!(post_reload(&gw).await.status, StatusCode::OK);
    let after = support::admin(&gw, "/admin/upstreams").await.json();
    assert_eq!(
        support::endpoint_of(&after, "world", silent_addr)["health"],
        "unhealthy",
        "{after}"
    );
    for _ in 0..4 {
        let r = http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", body_of(&r));
    }
}

/// A discovering service whose settings change starts with the endpoints
/// the running one found, not with none until DNS answers again (here it
/// does not answer at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_discovering_service_keeps_its_endpoints_until_dns_answers() {
    let up = Upstream::start("world-1").await;
    let dns =
        support::dns::DnsServer::start(vec![support::dns::a("world.test.", "127.0.0.1", 1)]).await;
    let dir = tempfile::tempdir().unwrap();
    let text = |connect_timeout_ms: u32| {
        base(up.addr, "reload_on_change = false", "").replace(
            &format!("name = \"world\"\n[[services.endpoints]]\naddress = \"{}\"\n", up.addr),
            &format!(
                "name = \"world\"\nconnect_timeout_ms = {connect_timeout_ms}\n[services.discovery]\ntype = \"dns\"\nname = \"world.test\"\nrecord = \"a\"\nport = {}\nnameservers = [\"{}\"]\nmin_ttl_ms = 100\n",
                up.addr.port(),
                dns.addr()
            ),
        )
    };
    let first = text(2000);
    assert!(first.contains("[services.discovery]"), "{first}");
    let (gw, path) = from_file(dir.path(), &first).await;
    support::wait_upstreams(
        &gw,
        "the endpoint found by DNS",
        |_| {},
        |v| v.to_string().contains(&up.addr.to_string()),
    )
    .await;
    dns.set_mode(support::dns::Mode::Silent);
    std::fs::write(&path, text(1500)).unwrap();
    assert_eq!(post_reload(&gw).await.status, StatusCode::OK);
    let c = support::admin(&gw, "/admin/config").await.json();
    assert_eq!(c["config"]["services"][0]["connect_timeout_ms"], 1500);
    let r = http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", body_of(&r));
}

/// An explicit reload reads the file: the watcher does not read the same
/// change a second time (which would double the generation and the
/// reload counters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reload_is_not_followed_by_a_file_change_reload_of_the_same_file() {
    let up = Upstream::start("world-1").await;
    let dir = tempfile::tempdir().unwrap();
    let watched = "reload_on_change = true\nreload_check_interval_ms = 100";
    let (gw, path) = from_file(dir.path(), &base(up.addr, watched, "")).await;
    std::fs::write(&path, base(up.addr, watched, ASSETS_ROUTE)).unwrap();
    let r = post_reload(&gw).await;
    assert_eq!(r.status, StatusCode::OK, "{}", body_of(&r));
    assert_eq!(r.json()["generation"], 2);
    // An absence, so a window rather than a condition: six watcher
    // intervals, in which the old behaviour reloaded again after two.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let c = support::admin(&gw, "/admin/config").await.json();
    assert_eq!(c["generation"], 2, "{}", c["last_attempt"]);
    assert_eq!(c["reloads"], 1);
    assert_eq!(c["last_attempt"]["trigger"], "admin");
}

/// On shutdown `/readyz` says 503 at once and the admin API stays up
/// through the drain; with `shutdown_delay_seconds` the listener keeps
/// serving that long (load balancers take the gateway out meanwhile),
/// then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_withdraws_readiness_first_and_the_delay_keeps_serving() {
    let up = Upstream::start("world-1").await;
    let gw = support::gateway(&base(up.addr, "shutdown_delay_seconds = 3", "")).await;
    let (addr, admin) = (gw.local_addr(), gw.admin_addr().unwrap());
    assert_eq!(http1(admin, get("/readyz")).await.status, StatusCode::OK);
    gw.shutdown();
    let r = http1(admin, get("/readyz")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["reason"], "draining: the gateway is shutting down");
    assert_eq!(http1(admin, get("/healthz")).await.status, StatusCode::OK);
    // Within the delay: new connections are accepted and served as usual.
    assert_eq!(
        http1(addr, get("/api/v1/worlds/1")).await.status,
        StatusCode::OK
    );
    gw.wait().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener closed after the delay"
    );
}

/// The admin listener bounds what clients that never finish a request (or
/// never read the answer) can hold: at most `admin::MAX_CONNECTIONS`
/// connections, a new one closing the oldest, so a probe still gets in;
/// and a 16 KiB request head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_caps_connections_and_head_size() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("world-1").await;
    let gw = support::gateway(&base(up.addr, "", "")).await;
    let admin = gw.admin_addr().unwrap();
    let big = "x".repeat(20 * 1024);
    let r = http1(admin, req("GET", "/healthz", &[("x-big", &big)], "")).await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // Every slot held: half by requests begun and never finished, half by
    // clients that send requests and never read the answers.
    let mut held = Vec::new();
    for i in 0..aether_gateway::admin::MAX_CONNECTIONS {
        let mut s = TcpStream::connect(admin).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        } else {
            let many = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(2000);
            s.write_all(&many).await.unwrap();
        }
        held.push(s);
    }
    // A probe is answered at once: the oldest held connection makes room.
    let probe = tokio::time::timeout(Duration::from_secs(4), http1(admin, get_local("/healthz")))
        .await
        .expect("a probe is answered while every slot is held");
    assert_eq!(probe.status, StatusCode::OK);
    // The one that made room (the first) was closed.
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(4), held[0].read(&mut buf))
        .await
        .expect("the oldest connection was closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "the oldest connection got {:?}", &buf[..n]);
}

fn get_local(path: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    admin_req("GET", path, &[])
}

/// A second SIGTERM during the shutdown delay stops the binary at once
/// (exit 0), instead of waiting out the delay and the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let up = Upstream::start("world-1").await;
    let text = base(
        up.addr,
        "reload_on_change = false\nshutdown_delay_seconds = 600\nshutdown_drain_seconds = 600",
        "",
    );
    let mut gw = support::GatewayProcess::start_logged(&text, "info");
    assert_eq!(
        http1(gw.addr, get("/api/v1/worlds/1")).await.status,
        StatusCode::OK
    );
    gw.signal("TERM");
    // The delay has begun once the log says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gw
        .log()
        .contains("closing the listener after the shutdown delay")
    {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "still serving during the delay"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        gw.log()
            .contains("second shutdown signal: closing every connection now"),
        "{}",
        gw.log()
    );
}
