//! The built binary as an operator runs it: `check`, the demo, graceful
//! shutdown on SIGTERM, and streaming 1 GiB each way in bounded memory.

mod support;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::upstream::TestBody;
use support::*;
use tokio::net::TcpStream;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aether-gateway"))
}

fn config_for(up: &Upstream, server_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n{}\n[[routes]]\nmethods = [\"GET\", \"POST\"]\npath = \"/api/v1/worlds/{{world_id}}\"\nservice = \"world-service\"\n",
        service_toml("world-service", &[up.addr], "")
    )
}

/// `aether-gateway check` on this config text: (exit code, stderr, the file's path).
fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, path.display().to_string())
}

#[test]
fn check_reports_file_line_and_field() {
    let (code, err, path) = check(
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[[services]]\nname = \"world-service\"\n\n[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"wrold-service\"\n",
    );
    assert_eq!(code, Some(2));
    let want = format!(
        "error: {path}:10:11: routes[0].service: unknown service \"wrold-service\" (defined: world-service)"
    );
    assert!(err.contains(&want), "stderr: {err}");

    let (code, err, _) = check("[server]\nlisten = \"127.0.0.1:8080\"\nlisten_port = 1\n");
    assert_eq!(code, Some(2));
    assert!(
        err.contains(":3:1: server.listen_port: unknown field `listen_port`"),
        "stderr: {err}"
    );
}

#[test]
fn check_accepts_the_example_configs() {
    for example in ["gateway.toml", "auth.toml", "relay.toml"] {
        let out = bin()
            .env("AETHER_TURN_SECRET", "example-secret-of-enough-bytes-0123")
            .arg("check")
            .arg("--config")
            .arg(format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR")))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{example}: {stderr}");
        // Every key of the example's JWKS is usable: no "skipped" warning.
        assert!(!stderr.contains("skipped"), "{example}: {stderr}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(": ok ("),
            "{example}"
        );
    }
}

#[test]
fn run_refuses_an_invalid_config_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[server]\nlisten = \"not-an-address\"\n").unwrap();
    let out = bin().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2:10: server.listen:"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_proxies_real_requests() {
    let mut child = bin()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let addr: std::net::SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("demo prints its address");
        if let Some(a) = line
            .strip_prefix("aether-gateway listening on http://")
            .or_else(|| line.strip_prefix("aether-gateway listening on https://"))
        {
            break a.parse().unwrap();
        }
    };
    let admin_addr: std::net::SocketAddr = {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("demo prints its admin address");
        line.strip_prefix("admin API on http://")
            .unwrap_or_else(|| panic!("unexpected line {line:?}"))
            .parse()
            .unwrap()
    };
    // The banner's tokens, as a user would paste them.
    let mut tokens = std::collections::HashMap::new();
    let mut relay_line = None;
    while tokens.len() < 2 {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("demo prints two tokens");
        if line.starts_with("TURN relay on udp://") {
            relay_line = Some(line.clone());
        }
        for name in ["PLAYER", "CREATOR"] {
            if let Some(t) = line.trim().strip_prefix(&format!("{name}=")) {
                tokens.insert(name, format!("Bearer {t}"));
            }
        }
    }
    // The demo's services are health-checked: both world endpoints turn
    // healthy after their first probe.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = http1(admin_addr, admin_req("GET", "/admin/upstreams", &[]))
            .await
            .json();
        let world = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == "world-service")
            .expect("world-service in /admin/upstreams")
            .clone();
        let eps = world["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 2);
        if eps.iter().all(|e| e["health"] == "healthy") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not healthy: {world}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = http1(addr, get("/api/v1/worlds/1")).await;
    // Geo routing: a client of the demo's eu-west network.
    let second = http1(
        addr,
        req(
            "GET",
            "/api/v1/worlds/1",
            &[("x-forwarded-for", "198.51.100.7")],
            "",
        ),
    )
    .await;
    let anonymous = http1(addr, get("/api/v1/me")).await;
    let me = http1(
        addr,
        req(
            "GET",
            "/api/v1/me",
            &[("authorization", &tokens["PLAYER"])],
            "",
        ),
    )
    .await;
    let player_post = http1(
        addr,
        req(
            "POST",
            "/api/v1/worlds",
            &[("authorization", &tokens["PLAYER"])],
            "{}",
        ),
    )
    .await;
    let creator_post = http1(
        addr,
        req(
            "POST",
            "/api/v1/worlds",
            &[("authorization", &tokens["CREATOR"])],
            "{}",
        ),
    )
    .await;
    let voice = http1(
        addr,
        req(
            "POST",
            "/api/v1/voice/credentials",
            &[("authorization", &tokens["PLAYER"])],
            "",
        ),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    // The demo's relay: its line, and credentials for the player on it.
    let relay_line = relay_line.expect("the demo prints its relay");
    let udp = relay_line
        .strip_prefix("TURN relay on udp://")
        .and_then(|r| r.split(' ').next())
        .unwrap();
    assert_eq!(voice.status, StatusCode::OK);
    let v = voice.json();
    assert!(
        v["username"].as_str().unwrap().ends_with(":player-1"),
        "{v}"
    );
    assert_eq!(v["region"], "us-east");
    assert_eq!(v["uris"][0], format!("turn:{udp}?transport=udp"));
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["x_aether_user"], "player-1");
    assert_eq!(me.json()["x_aether_roles"], "player");
    assert_eq!(player_post.status, StatusCode::FORBIDDEN);
    assert_eq!(creator_post.status, StatusCode::OK);
    assert_eq!(creator_post.json()["x_aether_roles"], "player,creator");
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["service"], "world-service");
    assert_eq!(first.json()["region"], "us-east");
    assert_eq!(
        first.header("x-aether-region"),
        Some("us-east; reason=nearest")
    );
    assert_eq!(second.json()["region"], "eu-west");
    assert_eq!(
        second.header("x-aether-region"),
        Some("eu-west; reason=nearest")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_enforces_a_route_rate_limit() {
    let up = Upstream::start("world").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[[routes]]\nmethod = \"GET\"\npath = \"/api/v1/worlds/{{world_id}}\"\nservice = \"world-service\"\nrate_limit = {{ requests_per_minute = 2, key = \"ip\" }}\n",
        service_toml("world-service", &[up.addr], "")
    );
    let gw = GatewayProcess::start(&cfg);
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = http1(gw.addr, get("/api/v1/worlds/1")).await;
        got.push((
            r.status.as_u16(),
            r.header("ratelimit-remaining").map(str::to_owned),
        ));
    }
    assert_eq!(
        got,
        [
            (200, Some("1".into())),
            (200, Some("0".into())),
            (429, Some("0".into()))
        ]
    );
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = Upstream::start("world").await;
    let mut gw = GatewayProcess::start(&config_for(&up, "shutdown_drain_seconds = 20"));
    let addr = gw.addr;
    let in_flight =
        tokio::spawn(async move { http1(addr, get("/api/v1/worlds/1?slow_ms=1500")).await });
    up.wait_for_hits(1).await;

    gw.signal("TERM");
    // New connections are refused once the listener is closed.
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener stayed open after SIGTERM");

    let r = in_flight.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "the in-flight request was cut");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(15)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drain_stops_at_the_deadline() {
    let up = Upstream::start("world").await;
    let mut gw = GatewayProcess::start(&config_for(&up, "shutdown_drain_seconds = 1"));
    let addr = gw.addr;
    // A request that would outlast the drain deadline.
    let in_flight = tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        tx.send_request(get("/api/v1/worlds/1?slow_ms=8000")).await
    });
    up.wait_for_hits(1).await;
    let started = std::time::Instant::now();
    gw.signal("INT");
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(Duration::from_secs(6)))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    assert!(started.elapsed() < Duration::from_secs(6));
    // The request was cut when the deadline passed, not answered.
    assert!(
        in_flight.await.unwrap().is_err(),
        "the slow request was answered after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_in_bounded_memory() {
    const GIB: u64 = 1 << 30;
    let up = Upstream::start("world").await;
    let gw = GatewayProcess::start(&config_for(
        &up,
        &format!("max_request_body_bytes = {}", 2 * GIB),
    ));

    // Upload: the upstream counts what arrives.
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/api/v1/worlds/1")
        .header("host", "x")
        .header("content-length", GIB.to_string())
        .body(TestBody::Stream { left: GIB })
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(j["body_bytes"], GIB);

    // Download: count without holding.
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, TestBody>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("/api/v1/worlds/1?download={GIB}"))
        .header("host", "x")
        .body(TestBody::Full(Some(Bytes::new())))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, GIB);

    let peak_kib = gw.status_kib("VmHWM");
    eprintln!("gateway peak RSS after 1 GiB each way: {peak_kib} KiB");
    assert!(
        peak_kib < 64 * 1024,
        "gateway peak RSS {peak_kib} KiB while streaming 1 GiB each way"
    );
}
