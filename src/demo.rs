//! The embedded demo: built-in upstreams and the config that routes to them,
//! so `aether-gateway` with no arguments proxies real requests at once.
//!
//! Auth is on, as in production: a random HMAC secret is made at start and
//! two tokens signed with it (a player and a creator) are printed, so the
//! role-gated route can be tried with curl.

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
        "x_aether_user": header("x-aether-user"),
        "x_aether_roles": header("x-aether-roles"),
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string() + "\n")));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The built-in config routing to `upstreams`, as TOML (the same format as a
/// config file); the HMAC secret of `[auth]` is read from `secret_file`, and
/// the voice relay on `relay` takes its credential secret from the same file.
pub fn config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    relay: SocketAddr,
    upstreams: &[DemoUpstream],
    secret_file: &Path,
) -> String {
    let mut t = format!(
        "# Built-in demo configuration.\n[server]\nlisten = \"{listen}\"\nmax_connections = 10000\n# Demo only: curl on this machine plays a trusted proxy, so X-Forwarded-For\n# and x-aether-region from it place the client (see [geo]).\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n\n[admin]\nlisten = \"{admin}\"\n\n[auth]\nissuer = \"{DEMO_ISSUER}\"\naudiences = [\"aether-api\"]\nrequired_claims = [\"sub\", \"role\"]\nalgorithms = [\"HS256\"]\n[[auth.keys]]\nalgorithm = \"HS256\"\nsecret_file = {:?}\n",
        secret_file.display().to_string()
    );
    for service in ["world-service", "asset-service"] {
        t.push_str(&format!(
            "\n[[services]]\nname = \"{service}\"\n[services.health_check]\npath = \"/health\"\ninterval_seconds = 5\n"
        ));
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
auth = "public"

[[routes]]
methods = ["POST"]
path = "/api/v1/worlds"
service = "world-service"
roles = ["creator"]

[[routes]]
method = "GET"
path = "/api/v1/me"
service = "world-service"

[[routes]]
method = "GET"
path = "/api/v1/status"
service = "world-service"
auth = "public"

[[routes]]
method = "GET"
path = "/api/v1/assets/{*path}"
service = "asset-service"
strip_prefix = "/api/v1"
auth = "public"

[geo]
default_region = "us-east"
region_header = "x-aether-region"
[[geo.networks]]
cidr = "198.51.100.0/24"
region = "eu-west"
[[geo.countries]]
country = "DE"
region = "eu-west"
[geo.latency_ms]
us-east = { us-east = 10, eu-west = 80 }
eu-west = { us-east = 80, eu-west = 10 }
"#,
    );
    t.push_str(&format!(
        "
[relay]
listen = \"{relay}\"
realm = \"aether\"
relay_address = \"{}\"
relay_ports = \"49152-65535\"
secret_file = {:?}
credential_ttl_seconds = 600
max_bitrate_kbps = 64
# turnutils_uclient leaves a probe allocation behind per run (it expires
# after 777 s): room for a few runs in a row.
max_allocations_per_user = 16
region = \"us-east\"
# Demo only: a TURN test peer on this machine (turnutils_peer) may be reached.
allowed_peers = [\"127.0.0.1/32\"]
",
        relay.ip(),
        secret_file.display().to_string()
    ));
    t
}

/// `iss` of the demo's tokens.
const DEMO_ISSUER: &str = "aether-demo";
/// How long the printed tokens are valid.
const DEMO_TOKEN_SECONDS: u64 = 24 * 3600;

/// The demo's validated config and the tokens it prints.
#[derive(Debug)]
pub struct Demo {
    /// The config to run.
    pub config: GatewayConfig,
    /// Tokens signed with the config's secret.
    pub tokens: DemoTokens,
}

/// Bearer tokens the demo gateway accepts.
#[derive(Debug, Clone)]
pub struct DemoTokens {
    /// `sub` player-1, role `player`.
    pub player: String,
    /// `sub` creator-1, roles `player` and `creator`.
    pub creator: String,
}

/// Validate the built-in config for these upstreams, with a fresh random
/// HMAC secret, and sign the demo tokens with it.
///
/// # Errors
/// When the secret cannot be written to the temporary directory, or if the
/// built-in text is broken (a bug, caught by tests).
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    relay: SocketAddr,
    upstreams: &[DemoUpstream],
) -> Result<Demo, ConfigError> {
    if relay.ip().is_unspecified() {
        return Err(ConfigError {
            file: "<demo --relay-listen>".into(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!(
                "{relay}: the demo relay needs an address peers can reach, not a wildcard (e.g. --relay-listen 127.0.0.1:3478, or this machine's LAN address)"
            ),
        });
    }
    let secret = random_secret();
    // The key is read while the config is validated; the file is gone
    // before the gateway serves a request.
    let file =
        std::env::temp_dir().join(format!("aether-gateway-demo-{}.secret", std::process::id()));
    let text = config_text(listen, admin, relay, upstreams, &file);
    let origin = Path::new("<built-in demo config>");
    std::fs::write(&file, &secret).map_err(|e| ConfigError {
        file: origin.into(),
        line: 0,
        column: 0,
        field: String::new(),
        message: format!("cannot write {}: {e}", file.display()),
    })?;
    let parsed = config::parse(&text, origin);
    let _ = std::fs::remove_file(&file);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + DEMO_TOKEN_SECONDS;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .expect("an HMAC key takes any secret");
    let sign = |sub: &str, roles: &[&str]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"iss": DEMO_ISSUER, "aud": "aether-api", "sub": sub, "role": roles, "exp": exp}),
            &key,
        )
        .expect("HS256 signing cannot fail")
    };
    Ok(Demo {
        config: parsed?,
        tokens: DemoTokens {
            player: sign("player-1", &["player"]),
            creator: sign("creator-1", &["player", "creator"]),
        },
    })
}

/// 32 random bytes, hex: from the OS-seeded keys of std's hasher, so the
/// demo needs no RNG crate (a demo secret, not a production one).
fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    (0..4u64)
        .map(|i| {
            let mut h = state.build_hasher();
            h.write_u64(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The walk-through printed when the demo starts.
pub fn banner(
    gateway: SocketAddr,
    admin: Option<SocketAddr>,
    relay: Option<SocketAddr>,
    upstreams: &[DemoUpstream],
    tokens: &DemoTokens,
) -> String {
    let mut s = format!("aether-gateway demo: gateway on http://{gateway}\n");
    for up in upstreams {
        s.push_str(&format!(
            "  upstream {:<15} {:<17} on {}\n",
            up.service, up.instance, up.address
        ));
    }
    s.push_str(&format!(
        "\nTry:\n  curl -i http://{gateway}/api/v1/worlds/1\n  curl -i -H 'x-forwarded-for: 198.51.100.7' http://{gateway}/api/v1/worlds/1   # a client in eu-west: world-eu-west-1\n  curl -i -H 'x-aether-region: DE' http://{gateway}/api/v1/worlds/1   # a CDN's country header: eu-west\n  curl -i http://{gateway}/api/v1/assets/avatars/robot.glb   # prefix stripped upstream\n  curl -i -X DELETE http://{gateway}/api/v1/worlds/1   # 405 with Allow\n  curl -i http://{gateway}/nope                        # 404 JSON error\n\nAuth (JWT, HS256 with a secret made at start; tokens valid 24 h):\n  PLAYER={player}\n  CREATOR={creator}\n  curl -i http://{gateway}/api/v1/me                   # 401 with WWW-Authenticate\n  curl -i -H \"Authorization: Bearer $PLAYER\" http://{gateway}/api/v1/me   # x-aether-user reaches the upstream\n  curl -i -X POST -H \"Authorization: Bearer $PLAYER\" http://{gateway}/api/v1/worlds    # 403: needs role creator\n  curl -i -X POST -d '{{\"name\":\"lobby\"}}' -H \"Authorization: Bearer $CREATOR\" http://{gateway}/api/v1/worlds   # 200\n",
        player = tokens.player,
        creator = tokens.creator,
    ));
    if let Some(relay) = relay {
        s.push_str(&format!(
            "\nVoice relay (STUN/TURN on UDP and TCP {relay}; coturn's test clients: apt install coturn):\n  curl -s -X POST -H \"Authorization: Bearer $PLAYER\" http://{gateway}/api/v1/voice/credentials   # TURN credentials as iceServers JSON\n  turnutils_stunclient -L 127.0.0.1 -p {port} {ip}   # your address as the relay sees it\n  turnutils_peer -L 127.0.0.1 -p 3480 &              # a UDP echo peer (kill %1 when done)\n  U=$(curl -s -X POST -H \"Authorization: Bearer $PLAYER\" http://{gateway}/api/v1/voice/credentials)\n  turnutils_uclient -L 127.0.0.1 -e 127.0.0.1 -r 3480 -n 50 -c -p {port} -u \"$(echo \"$U\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"username\"])')\" -w \"$(echo \"$U\" | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"credential\"])')\" {ip}\n",
            port = relay.port(),
            ip = relay.ip(),
        ));
    }
    if let Some(admin) = admin {
        s.push_str(&format!(
            "\nAdmin API (loopback only):\n  curl -s http://{admin}/admin/upstreams   # health, ejections and load of every endpoint\n  curl -s http://{admin}/admin/geo         # latency table, measured RTT per region, current choices\n  curl -s http://{admin}/admin/relay       # relay allocations, relayed packets and bytes, drops\n"
        ));
    }
    s.push_str("\nStop with Ctrl-C.\n");
    s
}
