//! Upstream management under abuse (from the attack review): a client's own
//! failures never count against an endpoint (h1 and h2c, slow, oversized,
//! aborted and timed-out bodies), uploads do not feed latency estimates,
//! WebSocket tunnels count against the circuit breaker, discovery keeps an
//! endpoint's state across a weight change, and in-flight counts return to
//! zero after every kind of abort.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::{Proto, Upstream, admin, endpoint_of, gateway, get, http1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(server: &str, addrs: &[SocketAddr], service_extra: &str, route_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[admin]\nlisten = \"127.0.0.1:0\"\n{}\n[[routes]]\nmethods = [\"GET\", \"POST\"]\npath = \"/api/{{*rest}}\"\nservice = \"world-service\"\n{route_extra}\n",
        support::service_toml("world-service", addrs, service_extra)
    )
}

const EJECT_AFTER_3: &str = r#"all_unhealthy = "fail"
[services.outlier_detection]
consecutive_failures = 3
base_ejection_ms = 60000
max_ejection_ms = 600000
"#;

async fn ep(gw: &aether_gateway::RunningGateway, addr: SocketAddr) -> serde_json::Value {
    let v = admin(gw, "/admin/upstreams").await.json();
    endpoint_of(&v, "world-service", addr).clone()
}

/// Raw HTTP/1.1 chunked POST: first chunk, pause, second chunk. Returns the status line.
async fn slow_chunked_post(gw: SocketAddr, pause: Duration) -> String {
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(
        b"POST /api/upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(pause).await;
    let _ = s.write_all(b"5\r\nworld\r\n0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// A client that uploads slowly (well inside client_body_timeout) is not
/// timed by the per-try timeout: the endpoint is not blamed or ejected, and
/// other clients are still served.
#[tokio::test]
async fn a_slow_client_body_is_not_blamed_on_the_endpoint_by_per_try_timeout() {
    let a = Upstream::start("a").await;
    let gw = gateway(&config(
        "",
        &[a.addr],
        EJECT_AFTER_3,
        "per_try_timeout_ms = 200\n",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(slow_chunked_post(gw.local_addr(), Duration::from_millis(500)).await);
    }
    let e = ep(&gw, a.addr).await;
    let victim = http1(gw.local_addr(), get("/api/x")).await;
    assert_eq!(
        e["failures"], 0,
        "slow client counted against the endpoint: {e}"
    );
    assert_eq!(
        e["ejected"], false,
        "endpoint ejected by a slow client: {e}"
    );
    assert_eq!(victim.status, StatusCode::OK);
}

/// Request-body failures that are the client's fault (over the body cap,
/// here) are the client's on h2c too (hyper's h2 client reports only a
/// reset stream): 413, and no failure of the endpoint.
#[tokio::test]
async fn h2c_client_body_errors_are_not_blamed_on_the_endpoint() {
    let a = Upstream::start_with("a", Proto::H2Only).await;
    let svc = format!("protocol = \"h2c\"\n{EJECT_AFTER_3}");
    let gw = gateway(&config(
        "",
        &[a.addr],
        &svc,
        "max_request_body_bytes = 16\n",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        // Chunked (no Content-Length), so the cap is found while streaming.
        let mut s = TcpStream::connect(gw.local_addr()).await.unwrap();
        s.write_all(
            b"POST /api/upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let chunk = format!("{:x}\r\n{}\r\n", 4096, "x".repeat(4096));
        for _ in 0..4 {
            let _ = s.write_all(chunk.as_bytes()).await;
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        statuses.push(
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        );
    }
    let e = ep(&gw, a.addr).await;
    let victim = http1(gw.local_addr(), get("/api/x")).await;
    assert!(statuses.iter().all(|s| s.contains("413")), "{statuses:?}");
    assert_eq!(
        e["failures"], 0,
        "client's oversize body counted against the endpoint: {e}"
    );
    assert_eq!(victim.status, StatusCode::OK);
}

/// Same with a client that pauses past client_body_timeout (a 408 on h1).
#[tokio::test]
async fn h2c_client_body_timeout_is_not_blamed_on_the_endpoint() {
    let a = Upstream::start_with("a", Proto::H2Only).await;
    let svc = format!("protocol = \"h2c\"\n{EJECT_AFTER_3}");
    let gw = gateway(&config(
        "client_body_timeout_ms = 200\n",
        &[a.addr],
        &svc,
        "",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(slow_chunked_post(gw.local_addr(), Duration::from_millis(600)).await);
    }
    let e = ep(&gw, a.addr).await;
    assert!(statuses.iter().all(|s| s.contains("408")), "{statuses:?}");
    assert_eq!(
        e["failures"], 0,
        "client's body timeout counted against the endpoint: {e}"
    );
    assert_eq!(e["ejected"], false, "{e}");
}

/// An open WebSocket tunnel is a request in flight at its endpoint: the
/// circuit breaker (max 1 here) bounds tunnels, and a closed one frees its slot.
#[tokio::test]
async fn websocket_tunnels_count_against_the_circuit_breaker() {
    let a = Upstream::start("a").await;
    let gw = gateway(&config(
        "",
        &[a.addr],
        "max_requests_per_endpoint = 1\n",
        "",
    ))
    .await;
    let url = format!("ws://{}/api/ws", gw.local_addr());
    let (mut open, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("first tunnel");
    // The open tunnel is the endpoint's one request in flight.
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        other => panic!(
            "a second tunnel through a breaker of 1: {:?}",
            other.map(|_| ())
        ),
    }
    assert_eq!(ep(&gw, a.addr).await["in_flight"], 1);
    open.close(None).await.unwrap();
    drop(open);
    support::wait_upstreams(
        &gw,
        "the tunnel closed",
        |_| {},
        |v| endpoint_of(v, "world-service", a.addr)["in_flight"] == 0,
    )
    .await;
    tokio_tungstenite::connect_async(&url)
        .await
        .expect("a tunnel after the first closed");
}

/// A slow upload is the client's time: it must not make a healthy endpoint
/// look seconds slow to peak EWMA.
#[tokio::test]
async fn a_slow_upload_does_not_poison_the_peak_ewma_estimate() {
    let a = Upstream::start("a").await;
    let gw = gateway(&config("", &[a.addr], "balance = \"peak_ewma\"\n", "")).await;
    let status = slow_chunked_post(gw.local_addr(), Duration::from_millis(1500)).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let e = ep(&gw, a.addr).await;
    assert!(
        e["latency_ms"].as_f64().unwrap() < 200.0,
        "endpoint latency estimate poisoned by a client upload: {e}"
    );
}

/// A DNS refresh that only changes an SRV weight keeps the endpoint: its
/// ejection (and active health, pool, in-flight count) stays.
#[tokio::test]
async fn an_srv_weight_change_keeps_the_endpoint_state() {
    use support::dns::{self, DnsServer, srv};
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let name = "_world._tcp.aether.test";
    let records = |wa: u16| {
        vec![
            srv(name, 10, wa, a.addr.port(), "a.aether.test", 1),
            dns::a("a.aether.test", "127.0.0.1", 1),
            srv(name, 10, 1, b.addr.port(), "b.aether.test", 1),
            dns::a("b.aether.test", "127.0.0.1", 1),
        ]
    };
    let dns = DnsServer::start(records(1)).await;
    let svc = format!(
        "[services.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_ms = 600000\nmax_ejection_ms = 600000\n[services.discovery]\ntype = \"dns\"\nname = \"{name}\"\nrecord = \"srv\"\nnameservers = [\"{}\"]\nmin_ttl_ms = 100\nmax_ttl_ms = 200\n",
        dns.addr()
    );
    let gw = gateway(&config("", &[], &svc, "")).await;
    support::wait_upstreams(
        &gw,
        "two endpoints",
        |_| {},
        |v| v["services"][0]["endpoints"].as_array().unwrap().len() == 2,
    )
    .await;
    a.set_status(500);
    for _ in 0..6 {
        http1(gw.local_addr(), get("/api/x")).await;
    }
    let before = ep(&gw, a.addr).await;
    assert_eq!(before["ejected"], true, "{before}");
    dns.set_records(records(5));
    let after = support::wait_upstreams(
        &gw,
        "weight 5",
        |_| {},
        |v| endpoint_of(v, "world-service", a.addr)["weight"] == 5,
    )
    .await;
    let after = endpoint_of(&after, "world-service", a.addr);
    assert_eq!(
        after["ejected"], true,
        "weight change un-ejected the endpoint: {after}"
    );
}

/// A client that disconnects in the middle of its body is not a failure of
/// an h2c endpoint (as on h1).
#[tokio::test]
async fn h2c_client_disconnect_mid_body_is_not_blamed_on_the_endpoint() {
    let a = Upstream::start_with("a", Proto::H2Only).await;
    let svc = format!("protocol = \"h2c\"\n{EJECT_AFTER_3}");
    let gw = gateway(&config("", &[a.addr], &svc, "")).await;
    for i in 0..3 {
        let mut s = start_trickle(gw.local_addr()).await;
        a.wait_for_hits(i + 1).await;
        s.shutdown().await.unwrap();
        drop(s);
    }
    // The aborted attempts have ended once nothing is in flight.
    support::wait_upstreams(
        &gw,
        "in_flight 0",
        |_| {},
        |v| endpoint_of(v, "world-service", a.addr)["in_flight"] == 0,
    )
    .await;
    let e = ep(&gw, a.addr).await;
    let victim = http1(gw.local_addr(), get("/api/x")).await;
    assert_eq!(
        e["failures"], 0,
        "client disconnects counted against the endpoint: {e}"
    );
    assert_eq!(victim.status, StatusCode::OK);
}

/// In-flight accounting after clients vanish mid-response (h1 close, h2
/// stream drop, h2 connection drop), per-try timeouts, 101 unasked: back to 0.
#[tokio::test]
async fn in_flight_returns_to_zero_after_aborts() {
    let a = Upstream::start("a").await;
    let gw = gateway(&config(
        "",
        &[a.addr],
        "",
        "per_try_timeout_ms = 100\nretries = 0\n",
    ))
    .await;
    let g = gw.local_addr();
    // h1: read the head of a 50 MB download, then close.
    for _ in 0..5 {
        let mut s = TcpStream::connect(g).await.unwrap();
        s.write_all(b"GET /api/d?download=50000000 HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await.unwrap();
        drop(s);
    }
    // h2: several streams dropped mid-body, then the connection.
    {
        let (mut tx, conn) = support::h2_client(g).await;
        let mut resps = Vec::new();
        for _ in 0..5 {
            let r = tx
                .send_request(support::get_absolute(&format!(
                    "http://{g}/api/d?download=50000000"
                )))
                .await
                .unwrap();
            resps.push(r);
        }
        drop(resps.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(resps);
        drop(tx);
        conn.abort();
    }
    // per-try timeouts.
    for _ in 0..3 {
        let r = http1(g, get("/api/x?slow_ms=300")).await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    }
    support::wait_upstreams(
        &gw,
        "in_flight 0",
        |_| {},
        |v| endpoint_of(v, "world-service", a.addr)["in_flight"] == 0,
    )
    .await;
}

async fn start_trickle(gw: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(gw).await.unwrap();
    s.write_all(
        b"POST /api/upload HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n",
    )
    .await
    .unwrap();
    s
}
