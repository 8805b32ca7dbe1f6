//! Metrics, access logs and trace context on a running gateway: a known mix
//! of requests, then exact counts in `/metrics`, exact fields of the access
//! log line, and the `traceparent` the upstream saw.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aether_gateway::metrics::traceparent::TraceParent;
use http::StatusCode;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::jwt::{TestKey, claims, jwks};
use support::*;

const ROUTES: &str = r#"
[[routes]]
method = "GET"
path = "/api/v1/worlds/{world_id}"
service = "world-service"
auth = "public"

[[routes]]
method = "GET"
path = "/api/v1/me"
service = "world-service"

[[routes]]
method = "GET"
path = "/api/v1/limited"
service = "world-service"
auth = "public"
rate_limit = { requests_per_minute = 1, key = "ip" }

[[routes]]
method = "GET"
path = "/api/v1/assets/{asset_id}"
service = "asset-service"
auth = "public"

[[routes]]
method = "GET"
path = "/ws/{room}"
service = "world-service"
auth = "public"
"#;

struct Setup {
    up: Upstream,
    key: TestKey,
    config: String,
    _dir: tempfile::TempDir,
}

/// A world service that answers, an asset service whose only endpoint is
/// down, a JWKS file with one key, and `extra` sections.
async fn setup(extra: &str) -> Setup {
    let key = TestKey::ec(Algorithm::ES256, "ec-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&key])).unwrap();
    let up = Upstream::start("world-1").await;
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[auth]
issuer = "aether-auth"
audiences = ["aether-api"]
required_claims = ["sub", "role"]
algorithms = ["ES256"]
jwks_file = {jwks:?}

{extra}
{world}
{asset}
{ROUTES}"#,
        jwks = path.display().to_string(),
        world = service_toml("world-service", &[up.addr], ""),
        asset = service_toml("asset-service", &[dead_addr()], ""),
    );
    Setup {
        up,
        key,
        config,
        _dir: dir,
    }
}

/// One sample: metric name and labels (sorted), as written.
type Key = (String, BTreeMap<String, String>);

/// A strict reader of the OpenMetrics text format, as far as the gateway
/// writes it: every sample belongs to a family declared by `# TYPE`
/// before it, label values are quoted with `\\`, `\"` and `\n` escapes, no
/// sample appears twice, and the text ends with `# EOF`.
fn parse_openmetrics(text: &str) -> HashMap<Key, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "text after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_else(|| panic!("bad line {line:?}"));
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap();
                    assert!(
                        ["counter", "gauge", "histogram", "info", "unknown"].contains(&t),
                        "{line:?}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "family declared twice: {name}"
                    );
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (name, labels, value) = parse_sample(line);
        types
            .iter()
            .find(|(f, t)| {
                let suffixes: &[&str] = match t.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_count", "_sum", "_created"],
                    _ => &[""],
                };
                suffixes
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(f.as_str()))
            })
            .unwrap_or_else(|| panic!("sample of no declared family: {line:?}"));
        assert!(
            samples.insert((name, labels), value).is_none(),
            "sample written twice: {line:?}"
        );
    }
    assert!(eof, "no # EOF at the end");
    samples
}

fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("bad sample {line:?}"));
    let name = &line[..name_end];
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name {name:?}"
    );
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices();
        let mut key = String::new();
        loop {
            let (_, c) = chars.next().expect("unterminated labels");
            match c {
                '}' => break,
                ',' if key.is_empty() => {}
                '=' => {
                    assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line:?}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated value").1 {
                            '"' => break,
                            '\\' => match chars.next().unwrap().1 {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                e => panic!("bad escape \\{e} in {line:?}"),
                            },
                            c => value.push(c),
                        }
                    }
                    assert!(
                        labels.insert(std::mem::take(&mut key), value).is_none(),
                        "label twice: {line:?}"
                    );
                }
                c if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                c => panic!("bad label character {c:?} in {line:?}"),
            }
        }
        rest = chars
            .as_str()
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value: {line:?}"));
    } else {
        rest = rest.strip_prefix(' ').unwrap();
    }
    let value: f64 = match rest {
        "+Inf" => f64::INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
    };
    (name.to_owned(), labels, value)
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn value(samples: &HashMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    *samples.get(&key(name, labels)).unwrap_or_else(|| {
        let mut near: Vec<_> = samples.keys().filter(|k| k.0 == name).collect();
        near.sort();
        panic!("no sample {name}{labels:?}; with that name: {near:#?}")
    })
}

async fn scrape(gw: &aether_gateway::RunningGateway) -> (String, HashMap<Key, f64>) {
    let r = admin(gw, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let samples = parse_openmetrics(&text);
    (text, samples)
}

#[tokio::test]
async fn metrics_count_a_known_mix_of_requests_by_route_template() {
    let s = setup("").await;
    let gw = gateway(&s.config).await;
    let addr = gw.local_addr();
    for id in ["1", "2", "3"] {
        let r = http1(addr, get(&format!("/api/v1/worlds/{id}?q=secret"))).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    for p in ["/nope/a", "/nope/b"] {
        assert_eq!(http1(addr, get(p)).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        http1(addr, get("/api/v1/assets/9")).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        http1(addr, get("/api/v1/me")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let token = s.key.sign(&claims("player-7", json!("player")));
    let auth = format!("Bearer {token}");
    assert_eq!(
        http1(
            addr,
            req("GET", "/api/v1/me", &[("authorization", &auth)], "")
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        http1(addr, get("/api/v1/limited")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        http1(addr, get("/api/v1/limited")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let (text, m) = scrape(&gw).await;
    let req_total = |route: &str, service: &str, method: &str, class: &str| {
        value(
            &m,
            "aether_requests_total",
            &[
                ("route", route),
                ("service", service),
                ("method", method),
                ("status_class", class),
            ],
        )
    };
    let worlds = "GET /api/v1/worlds/{world_id}";
    assert_eq!(req_total(worlds, "world-service", "GET", "2xx"), 3.0);
    assert_eq!(req_total(worlds, "world-service", "GET", "4xx"), 0.0);
    assert_eq!(req_total("none", "none", "none", "4xx"), 2.0);
    assert_eq!(
        req_total(
            "GET /api/v1/assets/{asset_id}",
            "asset-service",
            "GET",
            "5xx"
        ),
        1.0
    );
    assert_eq!(
        req_total("GET /api/v1/me", "world-service", "GET", "4xx"),
        1.0
    );
    assert_eq!(
        req_total("GET /api/v1/me", "world-service", "GET", "2xx"),
        1.0
    );
    assert_eq!(
        req_total("GET /api/v1/limited", "world-service", "GET", "2xx"),
        1.0
    );
    assert_eq!(
        req_total("GET /api/v1/limited", "world-service", "GET", "4xx"),
        1.0
    );
    // Every request is counted exactly once.
    let all: f64 = m
        .iter()
        .filter(|(k, _)| k.0 == "aether_requests_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(all, 10.0);

    // A route's own limit is named after the route.
    let rule = "route:GET /api/v1/limited";
    let decisions = |d: &str| {
        value(
            &m,
            "aether_rate_limit_decisions_total",
            &[("rule", rule), ("decision", d)],
        )
    };
    assert_eq!((decisions("allowed"), decisions("limited")), (1.0, 1.0));
    assert_eq!(
        value(&m, "aether_auth_failures_total", &[("reason", "missing")]),
        1.0
    );

    // Histograms: the three world requests went upstream; the 404s did not.
    let hist = |name: &str, route: &str| value(&m, name, &[("route", route)]);
    assert_eq!(
        hist("aether_request_upstream_duration_seconds_count", worlds),
        3.0
    );
    assert_eq!(
        hist("aether_request_gateway_duration_seconds_count", worlds),
        3.0
    );
    assert_eq!(
        hist("aether_request_gateway_duration_seconds_count", "none"),
        2.0
    );
    assert!(
        !m.contains_key(&key(
            "aether_request_upstream_duration_seconds_count",
            &[("route", "none")]
        )) || hist("aether_request_upstream_duration_seconds_count", "none") == 0.0
    );
    assert_eq!(
        value(
            &m,
            "aether_request_gateway_duration_seconds_bucket",
            &[("route", worlds), ("le", "+Inf")]
        ),
        3.0
    );

    // Read from the services at scrape time.
    let world_ep = s.up.addr.to_string();
    let ep = [
        ("service", "world-service"),
        ("endpoint", world_ep.as_str()),
    ];
    assert_eq!(value(&m, "aether_upstream_requests_total", &ep), 5.0);
    assert_eq!(value(&m, "aether_upstream_endpoint_serving", &ep), 1.0);
    assert_eq!(value(&m, "aether_upstream_endpoint_ejected", &ep), 0.0);
    assert_eq!(value(&m, "aether_upstream_ejections_total", &ep), 0.0);
    let h1 = |c: &str| {
        value(
            &m,
            "aether_upstream_h1_requests_total",
            &[
                ("service", "world-service"),
                ("endpoint", world_ep.as_str()),
                ("connection", c),
            ],
        )
    };
    // Whether a connection was back in the pool in time is the scheduler's
    // business; that each request is counted once is ours.
    assert!(h1("new") >= 1.0);
    assert_eq!(h1("new") + h1("reused"), 5.0);
    assert_eq!(
        value(
            &m,
            "aether_upstream_retries_total",
            &[("service", "world-service"), ("outcome", "granted")]
        ),
        0.0
    );

    // Bounded labels: route templates, never the paths clients sent.
    for (k, _) in m.iter() {
        if let Some(route) = k.1.get("route") {
            assert!(
                route == "none" || ROUTES.contains(route.split_once(' ').unwrap().1),
                "route label {route:?} is not a template"
            );
        }
    }
    for raw in ["/api/v1/worlds/1", "/nope/a", "secret", &token] {
        assert!(!text.contains(raw), "{raw:?} leaked into /metrics");
    }
    assert_eq!(s.up.hits(), 5);
}

#[tokio::test]
async fn connection_gauges_follow_open_connections() {
    let s = setup("").await;
    let gw = gateway(&s.config).await;
    let gauge = |m: &HashMap<Key, f64>| value(m, "aether_client_connections", &[]);
    let (_, m) = scrape(&gw).await;
    assert_eq!(gauge(&m), 0.0);
    assert_eq!(value(&m, "aether_websocket_tunnels", &[]), 0.0);
    // A connection held open: counted while it is.
    let conn = tokio::net::TcpStream::connect(gw.local_addr())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = scrape(&gw).await;
        if gauge(&m) == 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never counted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(conn);
    loop {
        let (_, m) = scrape(&gw).await;
        if gauge(&m) == 0.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never uncounted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Scrape until `name` (no labels) equals `want`, with a deadline.
async fn wait_gauge(
    gw: &aether_gateway::RunningGateway,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = scrape(gw).await;
        let v = m.get(&key(name, labels)).copied();
        if v == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{labels:?} stayed {v:?}, want {want}"
        );
        // A poll interval, not synchronisation: the condition is re-read.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Send "hi" on a WebSocket through the gateway and read its echo.
async fn echo_hi<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text("hi")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("hi"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_gauge_counts_open_tunnels() {
    let s = setup("").await;
    let gw = gateway(&s.config).await;
    let url = format!("ws://{}/ws/lobby", gw.local_addr());
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    echo_hi(&mut ws).await;
    wait_gauge(&gw, "aether_websocket_tunnels", &[], 1.0).await;
    // The tunnel's client connection still holds its slot: it is open.
    wait_gauge(&gw, "aether_client_connections", &[], 1.0).await;
    let (_, m) = scrape(&gw).await;
    assert_eq!(
        value(
            &m,
            "aether_requests_total",
            &[
                ("route", "GET /ws/{room}"),
                ("service", "world-service"),
                ("method", "GET"),
                ("status_class", "1xx")
            ]
        ),
        1.0
    );
    ws.close(None).await.unwrap();
    drop(ws);
    wait_gauge(&gw, "aether_websocket_tunnels", &[], 0.0).await;
    wait_gauge(&gw, "aether_client_connections", &[], 0.0).await;
}

#[tokio::test]
async fn relay_allocations_and_bytes_are_read_from_the_relay() {
    use support::turn_client::*;
    let gw = gateway(
        r#"[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[relay]
listen = "127.0.0.1:0"
relay_address = "127.0.0.1"
relay_ports = "50000-59999"
allowed_peers = ["127.0.0.1/32"]
[[relay.users]]
name = "alice"
password = "alicepass"
"#,
    )
    .await;
    let (_, m) = scrape(&gw).await;
    assert_eq!(value(&m, "aether_relay_allocations", &[]), 0.0);
    let peer = Peer::start().await;
    let mut c = TurnClient::udp(
        gw.relay().unwrap().udp_addr(),
        Creds::new("alice", "alicepass"),
    )
    .await;
    assert!(c.allocate().await.addr(XOR_RELAYED_ADDRESS).is_some());
    assert!(c.bind_channel(0x4000, peer.addr()).await.success);
    c.send_channel(0x4000, &[0x5A; 120]).await;
    let (_, got) = peer
        .recv(Duration::from_secs(5))
        .await
        .expect("relayed to the peer");
    assert_eq!(got.len(), 120);
    wait_gauge(
        &gw,
        "aether_relay_bytes_total",
        &[("direction", "to_peer")],
        120.0,
    )
    .await;
    let (_, m) = scrape(&gw).await;
    assert_eq!(value(&m, "aether_relay_allocations", &[]), 1.0);
    assert_eq!(value(&m, "aether_relay_allocations_opened_total", &[]), 1.0);
    assert_eq!(value(&m, "aether_relay_allocations_closed_total", &[]), 0.0);
    assert_eq!(
        value(
            &m,
            "aether_relay_packets_total",
            &[("direction", "to_peer")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "aether_relay_packets_total",
            &[("direction", "to_client")]
        ),
        0.0
    );
}

#[tokio::test]
async fn traceparent_is_created_continued_or_replaced() {
    let s = setup("").await;
    let gw = gateway(&s.config).await;
    let addr = gw.local_addr();
    let seen = |r: &Resp, h: &str| r.upstream_header(h);

    // Absent: a new, valid one.
    let r = http1(addr, get("/api/v1/worlds/1")).await;
    let tp = seen(&r, "traceparent").expect("traceparent sent upstream");
    let new = TraceParent::parse(tp.as_bytes()).expect("a valid traceparent");
    assert!(tp.starts_with("00-"), "{tp}");
    assert_eq!(new.flags, 0);

    // Valid: the same trace, the gateway's span as parent, flags and tracestate kept.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = http1(
        addr,
        req(
            "GET",
            "/api/v1/worlds/1",
            &[("traceparent", incoming), ("tracestate", "vendor=abc")],
            "",
        ),
    )
    .await;
    let tp = seen(&r, "traceparent").unwrap();
    let child = TraceParent::parse(tp.as_bytes()).unwrap();
    assert_eq!(&tp[..36], &incoming[..36], "same version and trace id");
    assert_ne!(&tp[36..52], &incoming[36..52], "a new parent id");
    assert_eq!(&tp[52..], "-01");
    assert_ne!(child.parent_id, [0; 8]);
    assert_eq!(seen(&r, "tracestate").as_deref(), Some("vendor=abc"));

    // Invalid (uppercase hex, all-zero trace id, version ff): replaced, tracestate dropped.
    for bad in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "garbage",
    ] {
        let r = http1(
            addr,
            req(
                "GET",
                "/api/v1/worlds/1",
                &[("traceparent", bad), ("tracestate", "vendor=abc")],
                "",
            ),
        )
        .await;
        let tp = seen(&r, "traceparent").unwrap();
        let t = TraceParent::parse(tp.as_bytes()).expect("a valid replacement");
        assert_ne!(&tp[3..35], "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
        assert_ne!(t.trace_id, [0; 16]);
        assert_eq!(seen(&r, "tracestate"), None, "{bad}");
    }

    // A continued trace's tracestate: only W3C's grammar is passed on.
    let state = |value: &str| {
        req(
            "GET",
            "/api/v1/worlds/1",
            &[("traceparent", incoming), ("tracestate", value)],
            "",
        )
    };
    let r = http1(addr, state("a=1 , , b@sys=x y")).await;
    assert_eq!(seen(&r, "tracestate").as_deref(), Some("a=1,b@sys=x y"));
    for bad in [
        "!!!not a list member;;; \"quoted\" <script>",
        "a=1,a=2",
        &(0..40)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(","),
    ] {
        let r = http1(addr, state(bad)).await;
        assert_eq!(seen(&r, "tracestate"), None, "{bad}");
        // The trace itself is still continued.
        assert_eq!(&seen(&r, "traceparent").unwrap()[3..35], &incoming[3..35]);
    }
}

/// `[log] incoming_trace`: a client's trace context continued only from a
/// trusted proxy (`"trusted"`), or never (`"restart"`).
#[tokio::test]
async fn incoming_traces_are_continued_only_as_configured() {
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for (mode, trusted, continued) in [
        ("trusted", "", false),
        ("trusted", "trusted_proxies = [\"127.0.0.1/32\"]\n", true),
        ("restart", "trusted_proxies = [\"127.0.0.1/32\"]\n", false),
        ("continue", "", true),
    ] {
        let s = setup(&format!("[log]\nincoming_trace = \"{mode}\"\n")).await;
        let config = s.config.replacen(
            "listen = \"127.0.0.1:0\"\n",
            &format!("listen = \"127.0.0.1:0\"\n{trusted}"),
            1,
        );
        let gw = gateway(&config).await;
        let r = http1(
            gw.local_addr(),
            req(
                "GET",
                "/api/v1/worlds/1",
                &[("traceparent", incoming), ("tracestate", "vendor=abc")],
                "",
            ),
        )
        .await;
        let tp = r.upstream_header("traceparent").unwrap();
        assert_eq!(tp[3..35] == incoming[3..35], continued, "{mode} {trusted}");
        assert_eq!(
            r.upstream_header("tracestate").is_some(),
            continued,
            "{mode} {trusted}"
        );
    }
}

fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect()
}

#[test]
fn access_log_line_has_exact_fields_and_never_the_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(setup("[log]\nformat = \"json\"\naccess_log = true\n"));
    let gw = GatewayProcess::start_logged(&s.config, "info");
    let token = s.key.sign(&claims("player-7", json!("player")));
    let auth = format!("Bearer {token}");
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = rt.block_on(http1(
        gw.addr,
        req(
            "POST",
            "/api/v1/worlds/7?api_key=hush",
            &[
                ("authorization", &auth),
                ("traceparent", incoming),
                ("x-request-id", "req-obs-1"),
            ],
            "",
        ),
    ));
    // POST has no route here (only GET): a 405 with an Allow header.
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = rt.block_on(http1(
        gw.addr,
        req(
            "GET",
            "/api/v1/me?api_key=hush",
            &[
                ("authorization", &auth),
                ("traceparent", incoming),
                ("x-request-id", "req-obs-2"),
            ],
            "",
        ),
    ));
    assert_eq!(r.status, StatusCode::OK);
    let body_len = r.body.len() as u64;
    // A request body is counted as it streams upstream.
    let r = rt.block_on(http1(
        gw.addr,
        req(
            "GET",
            "/api/v1/worlds/1",
            &[("x-request-id", "req-obs-3")],
            "hello",
        ),
    ));
    assert_eq!(r.status, StatusCode::OK);
    gw.signal("TERM");
    let mut gw = gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let log = gw.log();
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 3, "one line per request:\n{log}");
    // Lines are written as responses finish: found by request id, not order.
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}:\n{log}"))
    };
    let l = line("req-obs-3");
    assert_eq!(l["bytes_in"], 5);
    assert_eq!(l["route"], "GET /api/v1/worlds/{world_id}");
    assert!(l.get("user").is_none());

    let l = line("req-obs-2");
    let fields: BTreeMap<&str, &Value> = l
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    assert_eq!(l["level"], "INFO");
    assert_eq!(l["message"], "request");
    assert_eq!(l["request_id"], "req-obs-2");
    assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["path"], "/api/v1/me", "the query string is never logged");
    assert_eq!(l["route"], "GET /api/v1/me");
    assert_eq!(l["service"], "world-service");
    assert_eq!(l["upstream"], s.up.addr.to_string());
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_in"], 0);
    assert_eq!(l["bytes_out"], body_len);
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["user"], "player-7");
    let total = l["duration_ms"].as_f64().expect("duration_ms");
    let upstream = l["upstream_ms"].as_f64().expect("upstream_ms");
    assert!(
        upstream >= 0.0 && upstream <= total,
        "{upstream} <= {total}"
    );
    let mut names: Vec<&str> = fields.keys().copied().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bytes_in",
            "bytes_out",
            "client_ip",
            "duration_ms",
            "level",
            "message",
            "method",
            "path",
            "request_id",
            "route",
            "service",
            "status",
            "target",
            "timestamp",
            "trace_id",
            "upstream",
            "upstream_ms",
            "user",
        ]
    );

    // The unrouted request: no route, no upstream, still its own line.
    let l = line("req-obs-1");
    assert_eq!(l["route"], "none");
    assert_eq!(l["status"], 405);
    assert!(l.get("upstream").is_none() && l.get("service").is_none());

    let sig = token.rsplit('.').next().unwrap();
    for secret in [token.as_str(), sig, "hush"] {
        assert!(
            !log.contains(secret),
            "{secret:?} leaked into the log:\n{log}"
        );
    }
}

#[test]
fn access_log_off_writes_no_line() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(setup("[log]\nformat = \"json\"\naccess_log = false\n"));
    let gw = GatewayProcess::start_logged(&s.config, "info");
    let r = rt.block_on(http1(gw.addr, get("/api/v1/worlds/1")));
    assert_eq!(r.status, StatusCode::OK);
    gw.signal("TERM");
    let mut gw = gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let log = gw.log();
    assert_eq!(access_lines(&log).len(), 0, "{log}");
    // The process log is JSON too.
    assert!(
        log.lines()
            .any(|l| serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["message"] == "gateway stopped")),
        "{log}"
    );
}

#[test]
fn rust_log_silences_the_access_target() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(setup("[log]\nformat = \"json\"\n"));
    let gw = GatewayProcess::start_logged(&s.config, "info,access=off");
    let r = rt.block_on(http1(gw.addr, get("/api/v1/worlds/1")));
    assert_eq!(r.status, StatusCode::OK);
    gw.signal("TERM");
    let mut gw = gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(access_lines(&gw.log()).len(), 0, "{}", gw.log());
}

#[test]
fn log_config_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    for (text, want) in [
        (
            "[log]\nformat = \"xml\"\n",
            ":2:10: log.format: unknown variant `xml`, expected `text` or `json`",
        ),
        (
            "[log]\nformat = \"json\"\naccess_logs = true\n",
            ":3:1: log.access_logs: unknown field `access_logs`",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aether-gateway"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        let file = path.display().to_string();
        assert!(
            err.contains(&format!("{file}{want}")),
            "{err:?} should contain {file}{want}"
        );
    }
}

/// A WebSocket gets two access lines: its `101` (naming the endpoint) when
/// the handshake is answered, and `tunnel closed` with how long it was
/// open, the bytes each way and how it ended. A huge path is logged cut,
/// with its length.
#[test]
fn websocket_tunnels_and_long_paths_in_the_access_log() {
    use futures_util::StreamExt;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(setup("[log]\nformat = \"json\"\naccess_log = true\n"));
    let gw = GatewayProcess::start_logged(&s.config, "info");
    rt.block_on(async {
        let ws_req = http::Request::get(format!("ws://{}/ws/lobby", gw.addr))
            .header("x-request-id", "req-ws-1")
            .header("host", gw.addr.to_string())
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .unwrap();
        let (mut ws, resp) = tokio_tungstenite::connect_async(ws_req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        echo_hi(&mut ws).await;
        ws.close(None).await.unwrap();
        // Read to the end: the close handshake completes both ways.
        while let Some(Ok(_)) = ws.next().await {}
        let long = format!("/api/v1/{}", "a".repeat(2000));
        let r = http1(
            gw.addr,
            req("GET", &long, &[("x-request-id", "req-long")], ""),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    });
    // The tunnel's line is written when it closes: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("tunnel closed") {
        assert!(std::time::Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.signal("TERM");
    let mut gw = gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let log = gw.log();
    let lines = access_lines(&log);
    let of = |id: &str, message: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id && l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} line for {id}:\n{log}"))
            .clone()
    };
    let l = of("req-ws-1", "request");
    assert_eq!(l["status"], 101);
    assert_eq!(l["upstream"], s.up.addr.to_string());
    let t = of("req-ws-1", "tunnel closed");
    assert_eq!(t["route"], "GET /ws/{room}");
    assert_eq!(t["client_ip"], "127.0.0.1");
    assert_eq!(t["trace_id"], l["trace_id"]);
    assert_eq!(t["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(t["upstream"], s.up.addr.to_string());
    assert_eq!(t["ended"], "closed");
    // Client frames are masked: "hi" is 2 + 4 + 2 bytes, the close 2 + 4.
    assert_eq!(t["bytes_up"], 14, "{t}");
    // The echo (2 + 2); the test upstream answers a close by closing.
    assert_eq!(t["bytes_down"], 4, "{t}");
    assert!(t["tunnel_ms"].as_f64().unwrap() >= 0.0);

    let l = of("req-long", "request");
    let path = l["path"].as_str().unwrap();
    assert_eq!(path.len(), 512);
    assert!(path.starts_with("/api/v1/aaaa"));
    assert_eq!(l["path_bytes"], 2008);
}

/// With JSON logs every start-up line on stdout is JSON too (a shipper
/// reading both streams sees nothing else); a `RUST_LOG` that does not
/// parse is said so, and `[log] level` used; `/metrics` counts log lines
/// the writer had to drop.
#[test]
fn json_logs_mean_json_stdout_and_a_bad_rust_log_is_reported() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(setup("[log]\nformat = \"json\"\n"));
    let gw = GatewayProcess::start_logged(&s.config, "info,[[[");
    let admin = gw.admin_addr();
    let lines = gw.stdout_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
        assert!(v["message"].as_str().is_some(), "{l}");
    }
    let r = rt.block_on(http1(admin, support::admin_req("GET", "/metrics", &[])));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(
        text.lines()
            .any(|l| l == "aether_log_lines_dropped_total 0"),
        "{text}"
    );
    gw.signal("TERM");
    let mut gw = gw;
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let log = gw.log();
    let warning = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "RUST_LOG is not a valid filter: using [log] level instead")
        .unwrap_or_else(|| panic!("no warning about RUST_LOG:\n{log}"));
    assert_eq!(warning["level"], "WARN");
}
