//! The embedded demo: built-in upstreams and the config that routes to them,
//! so `aether-gateway` with no arguments proxies real requests at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::{self, ConfigError, GatewayConfig};

/// One built-in demo upstream.
#[derive(Debug, Clone)]
pub struct DemoUpstream {
    /// Service it belongs to.
    pub service: &'static str,
    /// Instance name reported in its answers.
    pub instance: &'static str,
    /// Region it pretends to run in.
    pub region: &'static str,
    /// Where it listens.
    pub address: SocketAddr,
}

const INSTANCES: [(&str, &str, &str); 3] = [
    ("world-service", "world-us-east-1", "us-east"),
    ("world-service", "world-eu-west-1", "eu-west"),
    ("asset-service", "asset-us-east-1", "us-east"),
];

/// Start the demo upstreams on ephemeral loopback ports.
///
/// # Errors
/// When a loopback port cannot be bound.
pub async fn start_upstreams() -> std::io::Result<Vec<DemoUpstream>> {
    let mut out = Vec::new();
    for (service, instance, region) in INSTANCES {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let up = DemoUpstream {
            service,
            instance,
            region,
            address,
        };
        tokio::spawn(serve_upstream(listener, up.clone()));
        out.push(up);
    }
    Ok(out)
}

async fn serve_upstream(listener: TcpListener, up: DemoUpstream) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let up = up.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(up.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    up: DemoUpstream,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let received = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let json = serde_json::json!({
        "service": up.service,
        "instance": up.instance,
        "region": up.region,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "body_bytes": received,
        "request_id": header("x-request-id"),
        "x_forwarded_for": header("x-forwarded-for"),
        "via": header("via"),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string() + "\n")));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The built-in config routing to `upstreams`, as TOML (the same format as a config file).
pub fn config_text(listen: SocketAddr, upstreams: &[DemoUpstream]) -> String {
    let mut t = format!(
        "# Built-in demo configuration.\n[server]\nlisten = \"{listen}\"\nmax_connections = 10000\n"
    );
    for service in ["world-service", "asset-service"] {
        t.push_str(&format!("\n[[services]]\nname = \"{service}\"\n"));
        for up in upstreams.iter().filter(|u| u.service == service) {
            t.push_str(&format!(
                "[[services.endpoints]]\naddress = \"{}\"\nregion = \"{}\"\n",
                up.address, up.region
            ));
        }
    }
    t.push_str(
        r#"
[[routes]]
method = "GET"
path = "/api/v1/worlds/{world_id}"
service = "world-service"

[[routes]]
methods = ["POST"]
path = "/api/v1/worlds"
service = "world-service"

[[routes]]
method = "GET"
path = "/api/v1/status"
service = "world-service"

[[routes]]
method = "GET"
path = "/api/v1/assets/{*path}"
service = "asset-service"
strip_prefix = "/api/v1"
"#,
    );
    t
}

/// Validate the built-in config for these upstreams.
///
/// # Errors
/// Only if the built-in text is broken (a bug, caught by tests).
pub fn config(
    listen: SocketAddr,
    upstreams: &[DemoUpstream],
) -> Result<GatewayConfig, ConfigError> {
    config::parse(
        &config_text(listen, upstreams),
        Path::new("<built-in demo config>"),
    )
}

/// The walk-through printed when the demo starts.
pub fn banner(gateway: SocketAddr, upstreams: &[DemoUpstream]) -> String {
    let mut s = format!("aether-gateway demo: gateway on http://{gateway}\n");
    for up in upstreams {
        s.push_str(&format!(
            "  upstream {:<15} {:<17} on {}\n",
            up.service, up.instance, up.address
        ));
    }
    s.push_str(&format!(
        "\nTry:\n  curl -i http://{gateway}/api/v1/worlds/1\n  curl -i http://{gateway}/api/v1/worlds/1   # round robin: the other region answers\n  curl -i -X POST -d '{{\"name\":\"lobby\"}}' http://{gateway}/api/v1/worlds\n  curl -i http://{gateway}/api/v1/assets/avatars/robot.glb   # prefix stripped upstream\n  curl -i -X DELETE http://{gateway}/api/v1/worlds/1   # 405 with Allow\n  curl -i http://{gateway}/nope                        # 404 JSON error\n\nStop with Ctrl-C.\n"
    ));
    s
}
