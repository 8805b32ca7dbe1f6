//! Proxy semantics through the running gateway: header hygiene, forwarding
//! headers, Host policy, protocol bridging, WebSockets, retries and timeouts.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use support::*;
use tokio_tungstenite::tungstenite::Message;

fn routes(service: &str) -> String {
    format!(
        r#"
[[routes]]
methods = ["GET", "POST", "PUT"]
path = "/api/v1/worlds/{{world_id}}"
service = "{service}"
timeout_ms = 500

[[routes]]
method = "GET"
path = "/ws/{{room}}"
service = "{service}"
"#
    )
}

async fn simple(
    extra_server: &str,
    service_extra: &str,
) -> (Upstream, aether_gateway::RunningGateway) {
    let up = Upstream::start("world-1").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{extra_server}\n{}{}",
        service_toml("world-service", &[up.addr], service_extra),
        routes("world-service")
    );
    let gw = gateway(&cfg).await;
    (up, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_never_cross() {
    let (_up, gw) = simple("", "").await;
    let r = http1(
        gw.local_addr(),
        req(
            "GET",
            "/api/v1/worlds/1?hop=1",
            &[
                ("connection", "keep-alive, x-client-hop"),
                ("x-client-hop", "secret"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("te", "gzip"),
                ("x-end-to-end", "kept"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    for h in [
        "connection",
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
    ] {
        assert_eq!(r.upstream_header(h), None, "{h} reached the upstream");
    }
    assert_eq!(r.upstream_header("x-end-to-end").as_deref(), Some("kept"));
    // The upstream's hop-by-hop response headers do not reach the client either.
    for h in ["x-upstream-hop", "keep-alive", "proxy-connection"] {
        assert_eq!(r.header(h), None, "{h} reached the client");
    }
    assert_eq!(r.header("x-upstream"), Some("world-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_client() {
    let (_up, gw) = simple("", "").await;
    let r = http1(
        gw.local_addr(),
        req(
            "GET",
            "/api/v1/worlds/1",
            &[
                ("host", "play.aether.test"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.test"),
                ("x-real-ip", "6.6.6.6"),
                ("via", "1.1 corp-proxy"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Appended, not replaced; the client's own claims are not believed.
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 127.0.0.1")
    );
    assert_eq!(r.upstream_header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("play.aether.test")
    );
    assert_eq!(
        r.upstream_header("via").as_deref(),
        Some("1.1 corp-proxy | 1.1 aether-gateway")
    );
    assert_eq!(
        r.upstream_header("host").as_deref(),
        Some("play.aether.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_chain_resolves_the_real_client() {
    let (_up, gw) = simple("trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]", "").await;
    let r = http1(
        gw.local_addr(),
        req(
            "GET",
            "/api/v1/worlds/1",
            &[
                ("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "play.example"),
            ],
            "",
        ),
    )
    .await;
    // Right-most untrusted entry: 10.1.2.3 is our proxy, 203.0.113.7 the client,
    // 6.6.6.6 whatever the client claimed.
    assert_eq!(
        r.upstream_header("x-real-ip").as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 203.0.113.7, 10.1.2.3, 127.0.0.1")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("play.example")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_fields_a_trusted_proxy_calls_hop_by_hop_are_set_anew() {
    let (_up, gw) = simple("trusted_proxies = [\"127.0.0.1/32\"]", "").await;
    let r = http1(
        gw.local_addr(),
        req(
            "GET",
            "/api/v1/worlds/1",
            &[
                ("connection", "x-forwarded-proto, x-forwarded-host"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "play.example"),
                ("x-forwarded-for", ""),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Named in Connection, the proxy's own fields were for its hop only:
    // the gateway's take their place (not nothing).
    assert_eq!(
        r.upstream_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("play.aether.test")
    );
    // An empty X-Forwarded-For adds no empty hop.
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );

    // An X-Forwarded-For the proxy calls hop-by-hop names no client: the
    // client is the proxy, in X-Real-IP as in X-Forwarded-For.
    let r = http1(
        gw.local_addr(),
        req(
            "GET",
            "/api/v1/worlds/1",
            &[
                ("connection", "X-Forwarded-For"),
                ("x-forwarded-for", "198.51.100.7"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.upstream_header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_generated_or_propagated_and_echoed() {
    let (up, gw) = simple("", "").await;
    let r = http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    let id = r.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        r.upstream_header("x-request-id").as_deref(),
        Some(id.as_str())
    );

    let r = http1(
        gw.local_addr(),
        req(
            "GET",
            "/api/v1/worlds/1",
            &[("x-request-id", "trace-abc-123")],
            "",
        ),
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
    assert_eq!(up.last().headers["x-request-id"], "trace-abc-123");

    let r = http1(
        gw.local_addr(),
        req(
            "GET",
            "/api/v1/worlds/1",
            &[("x-request-id", "bad id with spaces")],
            "",
        ),
    )
    .await;
    assert_ne!(r.header("x-request-id"), Some("bad id with spaces"));
    assert_eq!(r.header("x-request-id").unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_preserve_endpoint_and_rewrite() {
    let (up, gw) = simple("", "host = \"endpoint\"").await;
    http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(up.last().headers["host"], up.addr.to_string().as_str());

    let (up, gw) = simple("", "host_rewrite = \"world.internal\"").await;
    let r = http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(up.last().headers["host"], "world.internal");
    assert_eq!(
        r.upstream_header("x-forwarded-host").as_deref(),
        Some("play.aether.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_client_to_http1_upstream() {
    let up = Upstream::start_with("h1-only", Proto::Http1Only).await;
    let cfg = format!(
        "{}{}",
        service_toml("world-service", &[up.addr], ""),
        routes("world-service")
    );
    let gw = gateway(&cfg).await;
    let req = http::Request::builder()
        .method("POST")
        .uri("http://play.aether.test/api/v1/worlds/5")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"from h2",
        )))
        .unwrap();
    let r = h2c(gw.local_addr(), req).await;
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["body"], "from h2");
    assert_eq!(j["headers"]["host"], "play.aether.test");
    assert_eq!(j["headers"]["via"], "2 aether-gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_client_to_h2c_upstream() {
    let up = Upstream::start_with("h2-only", Proto::H2Only).await;
    let cfg = format!(
        "{}{}",
        service_toml("world-service", &[up.addr], "protocol = \"h2c\""),
        routes("world-service")
    );
    let gw = gateway(&cfg).await;
    for i in 0..3 {
        let r = http1(
            gw.local_addr(),
            req("PUT", "/api/v1/worlds/5", &[], "from h1"),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        let j = r.json();
        assert_eq!(j["version"], "HTTP/2.0");
        assert_eq!(j["body"], "from h1");
        assert_eq!(j["uri"], "http://play.aether.test/api/v1/worlds/5");
        // The fields the gateway adds reach an HTTP/2 upstream too, once each.
        let h = &j["headers"];
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-real-ip"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "play.aether.test");
        assert_eq!(h["via"], "1.1 aether-gateway");
        assert_eq!(h["x-request-id"], r.header("x-request-id").unwrap());
        assert_eq!(h["traceparent"].as_str().unwrap().len(), 55);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_gateway() {
    let (up, gw) = simple("", "").await;
    let url = format!("ws://{}/ws/lobby", gw.local_addr());
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(resp.headers().contains_key("x-request-id"));
    ws.send(Message::text("hello world")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("hello world"));
    let blob: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_data().as_ref(), blob.as_slice());
    ws.close(None).await.unwrap();
    let seen = up.last();
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["connection"], "upgrade");
    // The handshake goes through hyper: the added fields are in its map,
    // each once.
    let once = |name: &str| {
        let all: Vec<_> = seen.headers.get_all(name).iter().collect();
        assert_eq!(all.len(), 1, "{name}: {all:?}");
        all[0].to_str().unwrap().to_owned()
    };
    assert_eq!(once("x-forwarded-for"), "127.0.0.1");
    assert_eq!(once("x-real-ip"), "127.0.0.1");
    assert_eq!(once("x-forwarded-proto"), "http");
    assert_eq!(once("x-forwarded-host"), gw.local_addr().to_string());
    assert_eq!(once("via"), "1.1 aether-gateway");
    assert_eq!(once("x-request-id"), resp.headers()["x-request-id"]);
    assert_eq!(once("traceparent").len(), 55);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_retries_once_on_another_endpoint() {
    let up = Upstream::start("alive").await;
    let dead = dead_addr();
    let cfg = format!(
        "{}{}",
        service_toml("world-service", &[dead, up.addr], ""),
        routes("world-service")
    );
    let gw = gateway(&cfg).await;
    // Round robin starts on the dead endpoint every other request; every
    // request still succeeds, POST included: a refused connect sent nothing.
    for method in ["GET", "POST", "GET", "POST"] {
        let r = http1(gw.local_addr(), req(method, "/api/v1/worlds/1", &[], "x")).await;
        assert_eq!(r.status, StatusCode::OK, "{method}");
        assert_eq!(r.json()["method"], method);
    }
    assert_eq!(up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_endpoints_down_is_502_json() {
    let cfg = format!(
        "{}{}",
        service_toml("world-service", &[dead_addr(), dead_addr()], ""),
        routes("world-service")
    );
    let gw = gateway(&cfg).await;
    let r = http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.json()["error"], "upstream connect failed");
    assert_eq!(r.json()["request_id"], r.header("x-request-id").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    let (up, gw) = simple("", "").await;
    let started = std::time::Instant::now();
    let r = http1(gw.local_addr(), get("/api/v1/worlds/1?slow_ms=10000")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.json()["error"], "upstream timed out");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(up.hits(), 1);
    // The abandoned upstream connection is not reused: the next request works.
    let r = http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled() {
    let (up, gw) = simple("", "").await;
    for _ in 0..5 {
        let r = http1(gw.local_addr(), get("/api/v1/worlds/1")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Sequential requests ride one kept-alive upstream connection.
    let peers: std::collections::HashSet<_> = up.seen().iter().map(|s| s.peer).collect();
    assert_eq!((up.hits(), peers.len()), (5, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_cap_is_413() {
    let (up, gw) = simple("max_request_body_bytes = 1024", "").await;
    let big = "x".repeat(2048);
    let r = http1(gw.local_addr(), req("POST", "/api/v1/worlds/1", &[], &big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "request body too large");
    assert_eq!(
        up.hits(),
        0,
        "a declared oversize body is refused before dispatch"
    );
    let r = http1(
        gw.local_addr(),
        req("POST", "/api/v1/worlds/1", &[], &"x".repeat(1024)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_bytes"], 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_cap_is_413() {
    let (_up, gw) = simple("max_request_body_bytes = 1024", "").await;
    // No Content-Length: the cap is enforced while streaming.
    let mut raw_req = String::from(
        "POST /api/v1/worlds/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..4 {
        raw_req.push_str(&format!("400\r\n{}\r\n", "y".repeat(1024)));
    }
    raw_req.push_str("0\r\n\r\n");
    let (text, _) = raw(gw.local_addr(), raw_req.as_bytes(), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains("\"error\":\"request body too large\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_never_reach_the_upstream() {
    // An h2c upstream: HTTP/2 forwards trailers whether or not `Trailer`
    // announced them, so this sees what the body itself lets through.
    let up = Upstream::start_with("h2-only", Proto::H2Only).await;
    let cfg = format!(
        "{}{}",
        service_toml("world-service", &[up.addr], "protocol = \"h2c\""),
        routes("world-service")
    );
    let gw = gateway(&cfg).await;
    // Trailers would carry identity and forwarding claims past the head's
    // hygiene: HTTP/1.1 chunked trailers and HTTP/2 trailing HEADERS alike.
    let raw_req = "POST /api/v1/worlds/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: x-aether-user, x-forwarded-for\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-aether-user: admin\r\nx-forwarded-for: 10.9.9.9\r\n\r\n";
    let (text, _) = raw(gw.local_addr(), raw_req.as_bytes(), Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The echo's JSON (the response may be chunked: look for its members).
    assert!(text.contains("\"body\":\"hello\""), "{text}");
    assert!(text.contains("\"trailers\":{}"), "{text}");
    assert!(!text.contains("\"trailer\":"), "{text}");

    // HTTP/2: DATA, then HEADERS with END_STREAM (trailers).
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-aether-user", "admin".parse().unwrap());
    let frames = futures_util::stream::iter(vec![
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from_static(b"hi"))),
        Ok(http_body::Frame::trailers(trailers)),
    ]);
    let req = http::Request::post(format!("http://{}/api/v1/worlds/1", gw.local_addr()))
        .body(http_body_util::StreamBody::new(frames))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["body"], "hi");
    assert_eq!(body["trailers"], serde_json::json!({}));
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_authority_wins_over_host() {
    let (up, gw) = simple("", "").await;
    let (text, _) = raw(
        gw.local_addr(),
        b"GET http://play.aether.test/api/v1/worlds/3 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let seen = up.last();
    // The upstream gets origin-form and the target's authority as Host.
    assert_eq!(seen.uri, "/api/v1/worlds/3");
    assert_eq!(seen.headers["host"], "play.aether.test");
    assert_eq!(seen.headers["x-forwarded-host"], "play.aether.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_count_against_the_cap_and_close_when_idle() {
    let (_up, gw) = simple("max_connections = 1\ntunnel_idle_timeout_ms = 400", "").await;
    let url = format!("ws://{}/ws/lobby", gw.local_addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    ws.send(Message::text("ping")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("ping"));

    // The tunnel holds the only slot: a new connection waits in the queue...
    let mut other = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut other,
        b"GET /api/v1/worlds/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (text, _) = read_until_close(&mut other, Duration::from_millis(200)).await;
    assert_eq!(
        text, "",
        "a connection was served while a tunnel held the only slot"
    );

    // ...until the silent tunnel is closed by the gateway, which frees the slot.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(m)) if m.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle tunnel stayed open");
    let (text, _) = read_until_close(&mut other, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_claims_and_method_overrides_are_stripped() {
    let (up, gw) = simple("", "").await;
    let claims = [
        ("forwarded", "for=1.2.3.4;proto=https;host=admin"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("x-client-ip", "1.2.3.4"),
        ("true-client-ip", "1.2.3.4"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x_real_ip", "6.6.6.6"),
        ("x_http_method_override", "DELETE"),
        ("x-original-uri", "/admin"),
        ("x-host", "admin.internal"),
        ("te", "trailers"),
        ("x-kept", "yes"),
    ];
    let mut headers = claims.to_vec();
    headers.push(("te", "gzip"));
    let r = http1(
        gw.local_addr(),
        req("GET", "/api/v1/worlds/1", &headers, ""),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = up.last();
    for (name, _) in &claims[..claims.len() - 1] {
        assert!(
            !seen.headers.contains_key(*name),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.headers["x-kept"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_may_pass_forwarding_claims_but_never_method_overrides() {
    let (up, gw) = simple("trusted_proxies = [\"127.0.0.1/32\"]", "").await;
    let headers = [
        ("forwarded", "for=203.0.113.9"),
        ("x-forwarded-port", "443"),
        ("x-http-method-override", "DELETE"),
    ];
    http1(
        gw.local_addr(),
        req("GET", "/api/v1/worlds/1", &headers, ""),
    )
    .await;
    let seen = up.last();
    assert_eq!(seen.headers["forwarded"], "for=203.0.113.9");
    assert_eq!(seen.headers["x-forwarded-port"], "443");
    assert!(!seen.headers.contains_key("x-http-method-override"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookies_are_joined_and_authority_must_match_host() {
    let up = Upstream::start_with("h1-only", Proto::Http1Only).await;
    let cfg = format!(
        "{}{}",
        service_toml("world-service", &[up.addr], ""),
        routes("world-service")
    );
    let gw = gateway(&cfg).await;
    let req = http::Request::get("http://play.aether.test/api/v1/worlds/5")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = h2c(gw.local_addr(), req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(up.last().headers.get_all("cookie").iter().count(), 1);
    assert_eq!(up.last().headers["cookie"], "a=1; b=2");

    let req = http::Request::get("http://play.aether.test/api/v1/worlds/5")
        .header("host", "evil.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let r = h2c(gw.local_addr(), req).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "bad request: Host and :authority differ");
    assert_eq!(up.hits(), 1);
}
