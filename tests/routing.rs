//! Routing through the running gateway: 404/405/Allow/HEAD/OPTIONS, params,
//! catch-alls, prefix rewrite and safe path normalisation.

mod support;

use http::StatusCode;
use support::*;

async fn setup() -> (Upstream, Upstream, aether_gateway::RunningGateway) {
    let world = Upstream::start("world").await;
    let asset = Upstream::start("asset").await;
    let cfg = format!(
        r#"{}
{}
[[routes]]
method = "GET"
path = "/api/v1/worlds/{{world_id}}"
service = "world-service"

[[routes]]
methods = ["PUT", "DELETE"]
path = "/api/v1/worlds/{{world_id}}"
service = "world-service"

[[routes]]
method = "POST"
path = "/api/v1/worlds"
service = "world-service"

[[routes]]
method = "GET"
path = "/api/v1/assets/{{*path}}"
service = "asset-service"
strip_prefix = "/api/v1"
add_prefix = "/store"

[[routes]]
method = "GET"
path = "/api/v1/admin/{{*rest}}"
service = "asset-service"
"#,
        service_toml("world-service", &[world.addr], ""),
        service_toml("asset-service", &[asset.addr], ""),
    );
    let gw = gateway(&cfg).await;
    (world, asset, gw)
}

fn assert_json_error(r: &Resp, status: StatusCode, message: &str) {
    assert_eq!(r.status, status);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["error"], message);
    let id = r.header("x-request-id").expect("request id echoed");
    assert_eq!(j["request_id"], id);
    assert_eq!(j.as_object().unwrap().len(), 2, "{j}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_reach_the_right_service_with_the_path_intact() {
    let (world, asset, gw) = setup().await;
    let r = http1(gw.local_addr(), get("/api/v1/worlds/42?lod=2&x=%20")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["instance"], "world");
    assert_eq!(r.json()["uri"], "/api/v1/worlds/42?lod=2&x=%20");
    assert_eq!((world.hits(), asset.hits()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_all_with_prefix_rewrite() {
    let (_world, asset, gw) = setup().await;
    let r = http1(gw.local_addr(), get("/api/v1/assets/avatars/robot.glb")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["uri"], "/store/assets/avatars/robot.glb");
    assert_eq!(asset.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404_json_and_nothing_is_forwarded() {
    let (world, asset, gw) = setup().await;
    let r = http1(gw.local_addr(), get("/api/v2/nothing")).await;
    assert_json_error(&r, StatusCode::NOT_FOUND, "no route matches this path");
    assert_eq!(world.hits() + asset.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_with_allow() {
    let (world, _asset, gw) = setup().await;
    let r = http1(gw.local_addr(), req("PATCH", "/api/v1/worlds/1", &[], "")).await;
    assert_json_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE, OPTIONS"));
    let r = http1(gw.local_addr(), get("/api/v1/worlds")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    assert_eq!(world.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_served_by_get_routes_without_a_body() {
    let (world, _asset, gw) = setup().await;
    let r = http1(gw.local_addr(), req("HEAD", "/api/v1/worlds/9", &[], "")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(world.last().method, "HEAD");
    // The next request reuses the pooled upstream connection after a bodiless HEAD.
    let r = http1(gw.local_addr(), get("/api/v1/worlds/9")).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_is_answered_by_the_gateway() {
    let (world, _asset, gw) = setup().await;
    let r = http1(gw.local_addr(), req("OPTIONS", "/api/v1/worlds/9", &[], "")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE, OPTIONS"));
    let (text, _) = raw(
        gw.local_addr(),
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 204"), "{text}");
    assert_eq!(world.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_matching_and_forwarding() {
    let (world, _asset, gw) = setup().await;
    let a = gw.local_addr();
    for (sent, forwarded) in [
        ("/api//v1/./worlds/x/../42", "/api/v1/worlds/42"),
        ("/api/v1/worlds/%34%32", "/api/v1/worlds/42"),
        ("/api/v1/%77orlds/42", "/api/v1/worlds/42"),
        ("/api/v1/worlds/a%3bb", "/api/v1/worlds/a%3Bb"),
        ("/api/v1/worlds/v;x=1", "/api/v1/worlds/v;x=1"),
    ] {
        let r = http1(a, get(sent)).await;
        assert_eq!(r.status, StatusCode::OK, "{sent}");
        assert_eq!(r.json()["uri"], forwarded, "{sent}");
    }
    assert_eq!(world.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_paths_are_refused() {
    let (world, asset, gw) = setup().await;
    let a = gw.local_addr();
    // Encoded separators, backslashes and `..;` would be read differently by
    // some upstreams than by the router: refused by default.
    for (path, message) in [
        (
            "/api/v1/admin%2Fsecrets",
            "bad request path: encoded slash in path",
        ),
        (
            "/api/v1/worlds/..%2f..%2fadmin",
            "bad request path: encoded slash in path",
        ),
        (
            "/api/v1/assets/..%5cadmin",
            "bad request path: encoded slash in path",
        ),
        (
            "/api/v1/assets/..\\admin",
            "bad request path: backslash in path",
        ),
        (
            "/api/v1/assets/..;/..;/admin",
            "bad request path: dot segment with parameters",
        ),
        (
            "/api/../../etc/passwd",
            "bad request path: path escapes the root",
        ),
        (
            "/api/v1/worlds/%zz",
            "bad request path: invalid percent-encoding",
        ),
    ] {
        let r = http1(a, get(path)).await;
        assert_json_error(&r, StatusCode::BAD_REQUEST, message);
    }
    // `..` is resolved before matching, so the result is matched honestly.
    let r = http1(a, get("/api/v1/worlds/../admin/x")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["uri"], "/api/v1/admin/x");
    assert_eq!(world.hits(), 0);
    assert_eq!(asset.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_encoded_slash_stays_data_inside_one_segment() {
    let world = Upstream::start("world").await;
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nallow_encoded_slashes = true\n{}\n[[routes]]\nmethod = \"GET\"\npath = \"/api/v1/worlds/{{world_id}}\"\nservice = \"world-service\"\n[[routes]]\nmethod = \"GET\"\npath = \"/api/v1/admin/{{*rest}}\"\nservice = \"world-service\"\n",
        service_toml("world-service", &[world.addr], "")
    );
    let gw = gateway(&cfg).await;
    let r = http1(gw.local_addr(), get("/api/v1/worlds/a%2fb")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["uri"], "/api/v1/worlds/a%2Fb");
    // `admin%2Fsecrets` is one segment: it never matches `admin/{*rest}`.
    let r = http1(gw.local_addr(), get("/api/v1/admin%2Fsecrets")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(world.hits(), 1);
}
