//! The admin listener: a separate port (loopback unless the operator says
//! otherwise) for the people running the gateway, never for clients.
//!
//! - `GET /healthz`: the process is up.
//! - `GET /readyz`: 200 when a config is loaded and at least one upstream
//!   endpoint is serving (or no service is configured), else 503; 503 from
//!   the moment a shutdown begins (the admin listener stays up through the
//!   drain, so load balancers see it).
//! - `GET /admin/config`: the config in effect (secrets redacted), its
//!   generation and the last reload attempt.
//! - `POST /admin/reload`: read and validate the config file again and
//!   swap it in; the refused file's error otherwise (400).
//! - `GET /admin/upstreams`: every service, endpoint, health state,
//!   ejection and load figure, as JSON.
//! - `GET /admin/geo`: geo routing's latency table (configured and
//!   measured), each service's regions and the region each client region
//!   is sent to now.
//! - `GET /admin/relay`: the voice relay's allocations, relayed packets
//!   and bytes, drops by reason (counts only, never per user).
//! - `POST /admin/relay/revoke?user=NAME`: delete the user's allocations
//!   now and refuse the user's requests until credentials issued before
//!   lapse; `DELETE` on the same path lifts it.
//!
//! With `[admin] token_env` every path but `/healthz` and `/readyz` (which
//! load balancers and orchestrators probe without credentials) requires
//! `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::dispatch::pipeline::Shared;
use crate::health::ServiceHealth;

pub mod client;

/// Where the admin API reads the gateway's state: the same snapshot the
/// request path uses.
pub(crate) type SnapshotSource = Arc<Shared>;

/// Admin connections open at once; a new one beyond closes the oldest.
/// Tools, probes and scrapers need a handful: the cap bounds what
/// connections that never finish a request (or never read the answer) can
/// hold, and closing the oldest rather than queueing the newest means such
/// connections cannot keep a probe out.
pub const MAX_CONNECTIONS: usize = 64;
/// The largest admin request head; the API's requests are a line and a
/// few headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A connection that has not sent a whole request head by then is closed.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serve the admin API on `listener` until `stop` (after the drain: load
/// balancers keep reading `/readyz`'s 503 while the gateway drains).
pub(crate) async fn serve(
    listener: TcpListener,
    snapshot: SnapshotSource,
    stop: CancellationToken,
) {
    // The Host guard is for a loopback listener (what a DNS-rebinding page
    // reaches); one bound elsewhere is reached by names of its own.
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let open = Arc::new(OpenConnections::default());
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let snapshot = Arc::clone(&snapshot);
        let stop = stop.clone();
        let slot = OpenConnections::admit(&open);
        tokio::spawn(async move {
            let evicted = slot.evicted.clone();
            let _slot = slot;
            let svc = service_fn(move |req| {
                let snapshot = Arc::clone(&snapshot);
                async move { Ok::<_, Infallible>(handle(&snapshot, req, loopback).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = evicted.cancelled() => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The admin connections open, oldest first.
#[derive(Default)]
struct OpenConnections {
    list: std::sync::Mutex<(u64, std::collections::VecDeque<(u64, CancellationToken)>)>,
}

/// One admin connection's place in [`OpenConnections`], given back on drop.
struct AdminSlot {
    id: u64,
    evicted: CancellationToken,
    open: Arc<OpenConnections>,
}

impl OpenConnections {
    /// A place for a new connection; at the cap, the oldest is closed.
    fn admit(open: &Arc<Self>) -> AdminSlot {
        let evicted = CancellationToken::new();
        let mut guard = open.list.lock().unwrap_or_else(|p| p.into_inner());
        let (next, list) = &mut *guard;
        if list.len() >= MAX_CONNECTIONS
            && let Some((_, oldest)) = list.pop_front()
        {
            oldest.cancel();
        }
        *next += 1;
        list.push_back((*next, evicted.clone()));
        AdminSlot {
            id: *next,
            evicted,
            open: Arc::clone(open),
        }
    }
}

impl Drop for AdminSlot {
    fn drop(&mut self) {
        let mut guard = self.open.list.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.retain(|(id, _)| *id != self.id);
    }
}

#[derive(Serialize)]
struct Upstreams {
    services: Vec<ServiceHealth>,
}

/// The admin API's bearer token (`[admin] token_env` or `token_file`);
/// never printed.
#[derive(Clone)]
pub struct AdminToken(Arc<TokenInner>);

struct TokenInner {
    token: Box<str>,
    /// `token_file`: a token written there after the config was loaded is
    /// admitted too, so `aether-gateway reload` can present the rotated
    /// token whose reload makes it the only one.
    file: Option<std::path::PathBuf>,
    /// The file's token as last read, with the stamp (length, modification
    /// time) it was read at: read again only when the stamp changes.
    rotated: std::sync::Mutex<Option<(FileStamp, Box<str>)>>,
}

type FileStamp = (u64, Option<std::time::SystemTime>);

impl AdminToken {
    /// A token (the config checks its length).
    pub fn new(token: &str) -> Self {
        AdminToken(Arc::new(TokenInner {
            token: token.into(),
            file: None,
            rotated: std::sync::Mutex::new(None),
        }))
    }

    /// A token read from `file`; what the file holds later is admitted too.
    pub fn from_file(token: &str, file: std::path::PathBuf) -> Self {
        AdminToken(Arc::new(TokenInner {
            token: token.into(),
            file: Some(file),
            rotated: std::sync::Mutex::new(None),
        }))
    }

    /// The token itself, for building another from it (never for logs).
    pub(crate) fn expose(&self) -> &str {
        &self.0.token
    }

    /// `Bearer <token>`, as the admin client sends it (marked sensitive:
    /// never logged by hyper).
    pub fn bearer_value(&self) -> http::HeaderValue {
        let mut v = http::HeaderValue::from_str(&format!("Bearer {}", self.0.token))
            .expect("the config admits printable ASCII tokens only");
        v.set_sensitive(true);
        v
    }

    /// The token `token_file` holds now, if it changed since it was loaded
    /// (read again only when its length or modification time changed).
    fn rotated(&self) -> Option<Box<str>> {
        let file = self.0.file.as_ref()?;
        let meta = std::fs::metadata(file).ok()?;
        let stamp = (meta.len(), meta.modified().ok());
        let mut cached = self.0.rotated.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_none_or(|(s, _)| *s != stamp) {
            let text =
                crate::config::files::read_capped(file, crate::config::files::MAX_SECRET_BYTES)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())?;
            let token = text.trim();
            // The config's own rule for a usable token.
            if token.len() < 16 || token.bytes().any(|b| !b.is_ascii_graphic()) {
                return None;
            }
            *cached = Some((stamp, token.into()));
        }
        cached
            .as_ref()
            .map(|(_, t)| t.clone())
            .filter(|t| **t != *self.0.token)
    }

    /// True when `headers` carry `Authorization: Bearer <this token>`
    /// (compared in constant time), or the token its `token_file` holds now.
    fn admits(&self, headers: &http::HeaderMap) -> bool {
        let mut all = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(v), None) = (all.next(), all.next()) else {
            // None, or several: which one a proxy in front would have
            // checked is anyone's guess.
            return false;
        };
        let v = v.as_bytes();
        let Some(given) = v
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
            .map(|_| v[7..].trim_ascii())
        else {
            return false;
        };
        // Digests, so the comparison takes the same time whatever the
        // lengths (a length mismatch would return at once).
        let digest = |b: &[u8]| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
        let same = |token: &str| {
            aws_lc_rs::constant_time::verify_slices_are_equal(
                digest(given).as_ref(),
                digest(token.as_bytes()).as_ref(),
            )
            .is_ok()
        };
        same(&self.0.token) || self.rotated().is_some_and(|t| same(&t))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

async fn handle(
    snapshot: &SnapshotSource,
    req: Request<Incoming>,
    loopback: bool,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let (allow, open) = match path {
        "/healthz" | "/readyz" => ("GET, HEAD", true),
        // Metrics name the routes and services: the token guards them too
        // (Prometheus sends it with `authorization` in its scrape config).
        "/metrics" | "/admin/upstreams" | "/admin/geo" | "/admin/relay" | "/admin/config" => {
            ("GET, HEAD", false)
        }
        "/admin/relay/revoke" => ("POST, DELETE", false),
        "/admin/reload" => ("POST", false),
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not found"}),
            );
        }
    };
    let token = snapshot.snapshot.load().admin_token.clone();
    if !open
        && token.is_none()
        && let Some(why) = foreign(req.headers(), loopback)
    {
        // Without a token, what stands between a browser on the operator's
        // machine and this API is that browsers send Origin on cross-site
        // requests and a DNS-rebinding page's Host is its own name.
        return json(StatusCode::FORBIDDEN, &serde_json::json!({"error": why}));
    }
    if !open
        && let Some(token) = &token
        && !token.admits(req.headers())
    {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "this admin API needs Authorization: Bearer <token> ([admin] token_env or token_file)"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"aether-gateway admin\""),
        );
        return r;
    }
    let allowed = match allow {
        "GET, HEAD" => req.method() == Method::GET || req.method() == Method::HEAD,
        "POST" => req.method() == Method::POST,
        _ => req.method() == Method::POST || req.method() == Method::DELETE,
    };
    if !allowed {
        let mut r = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method not allowed"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static(allow));
        return r;
    }
    match path {
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/readyz" => readiness(snapshot),
        "/metrics" => crate::metrics::scrape(snapshot),
        "/admin/config" => config_status(snapshot),
        "/admin/reload" => reload(snapshot).await,
        "/admin/geo" => json(StatusCode::OK, &geo_status(&snapshot.snapshot.load())),
        "/admin/relay" => match &snapshot.relay {
            Some(r) => json(StatusCode::OK, &r.status()),
            None => json(StatusCode::OK, &serde_json::json!({"enabled": false})),
        },
        "/admin/relay/revoke" => revoke(snapshot, &req),
        _ => {
            let snap = snapshot.snapshot.load();
            let mut services: Vec<ServiceHealth> = snap
                .dispatcher
                .services()
                .map(|s| ServiceHealth::of(s))
                .collect();
            services.sort_by(|a, b| a.service.cmp(&b.service));
            json(StatusCode::OK, &Upstreams { services })
        }
    }
}

/// Why a request to an admin API without a token looks like it comes from
/// a web page: an `Origin` header, or a `Host` that is a name other than
/// `localhost` (IP literals are what tools use to reach a loopback port).
fn foreign(headers: &http::HeaderMap, loopback: bool) -> Option<&'static str> {
    if headers.contains_key(header::ORIGIN) {
        return Some(
            "requests with an Origin header (from a web page) are refused by an admin API without a token",
        );
    }
    if !loopback {
        return None;
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return Some(BAD_HOST);
    }
    // The strict form: `host[:port]`, nothing before an `@`.
    let ok = host
        .to_str()
        .ok()
        .filter(|h| !h.contains('@'))
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .is_some_and(|a| {
            let name = a.host();
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<std::net::Ipv4Addr>().is_ok()
                || name
                    .strip_prefix('[')
                    .and_then(|v6| v6.strip_suffix(']'))
                    .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
        });
    (!ok).then_some(BAD_HOST)
}

const BAD_HOST: &str = "the Host header must be an IP address or localhost on an admin API without a token (DNS rebinding guard)";

/// Ready: a config is loaded and some upstream endpoint can take requests.
fn readiness(shared: &SnapshotSource) -> Response<Full<Bytes>> {
    let snap = shared.snapshot.load();
    let mut services = 0;
    let mut serving = 0;
    for s in snap.dispatcher.services() {
        services += 1;
        serving += ServiceHealth::of(s)
            .endpoints
            .iter()
            .filter(|e| e.serving)
            .count();
    }
    let generation = shared.reload.status().generation;
    if shared.draining() {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"ready": false, "reason": "draining: the gateway is shutting down", "generation": generation, "services": services, "serving_endpoints": serving}),
        );
    }
    if services == 0 || serving > 0 {
        json(
            StatusCode::OK,
            &serde_json::json!({"ready": true, "generation": generation, "services": services, "serving_endpoints": serving}),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"ready": false, "reason": "no upstream endpoint is serving (all unhealthy, ejected or not yet discovered)", "generation": generation, "services": services, "serving_endpoints": 0}),
        )
    }
}

/// `POST /admin/reload`: the attempt's outcome.
async fn reload(shared: &SnapshotSource) -> Response<Full<Bytes>> {
    match shared.reload.reload("admin").await {
        Some(a) if a.applied => json(StatusCode::OK, &a),
        Some(a) => json(StatusCode::BAD_REQUEST, &a),
        None => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "the gateway is shutting down"}),
        ),
    }
}

/// `GET /admin/config`: the config in effect, secrets redacted.
fn config_status(shared: &SnapshotSource) -> Response<Full<Bytes>> {
    let snap = shared.snapshot.load();
    let status = shared.reload.status();
    let mut config = serde_json::to_value(&*snap.source).unwrap_or_default();
    redact(&mut config);
    json(
        StatusCode::OK,
        &serde_json::json!({
            // As given at start, and absolute (against the gateway's working
            // directory, symlinks kept): what `aether-gateway reload`
            // compares its file with.
            "file_absolute": status.file.as_deref().and_then(|f| std::path::absolute(f).ok()),
            "file": status.file,
            "generation": status.generation,
            "loaded_at_unix": status.loaded_at_unix,
            "reloads": status.reloads,
            "failed_reloads": status.failed_reloads,
            "last_attempt": status.last_attempt,
            "config": config,
        }),
    )
}

/// Secret values out of a config dump: keys that name a secret (not the
/// `_env`/`_file` keys that say where one is), and passwords in URLs.
fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                let names_secret = ["secret", "password", "token", "credential"]
                    .iter()
                    .any(|w| k.contains(w));
                let points_at_one =
                    k.ends_with("_env") || k.ends_with("_file") || k.ends_with("_path");
                if names_secret && !points_at_one && v.is_string() {
                    *v = serde_json::Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        serde_json::Value::String(s) => {
            if let Some(r) = redact_url(s) {
                *s = r;
            }
        }
        _ => {}
    }
}

/// A URL's secrets out: `scheme://user:<redacted>@host…` (the userinfo ends
/// at the last `@` before the path; `secret@host` becomes
/// `<redacted>@host`), and the values of query parameters that name a
/// secret or a signature. `None` when there is nothing to hide.
pub(crate) fn redact_url(s: &str) -> Option<String> {
    // `scheme://authority…`, or a scheme without an authority (`unix:/…`,
    // `redis+unix:/…?pass=…`), whose query can still carry a secret.
    let (scheme, sep, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (scheme, "://", rest),
        None => {
            let (scheme, rest) = s.split_once(':')?;
            let is_scheme = !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
            if !is_scheme {
                return None;
            }
            (scheme, ":", rest)
        }
    };
    let authority_end = if sep == "://" {
        rest.find(['/', '?', '#']).unwrap_or(rest.len())
    } else {
        0
    };
    let (authority, tail) = rest.split_at(authority_end);
    let mut changed = false;
    let authority = match authority.rfind('@') {
        Some(at) => {
            changed = true;
            // `user:password@`: the user stays; a lone `secret@` (Redis's
            // password-only form) is all secret.
            match authority[..at].split_once(':') {
                Some((user, _)) => format!("{user}:<redacted>@{}", &authority[at + 1..]),
                None => format!("<redacted>@{}", &authority[at + 1..]),
            }
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _))
                        // `sig`: S3 pre-signed (X-Amz-Signature) and
                        // Azure SAS (sig) URLs carry their secret there.
                        if [
                            "pass",
                            "secret",
                            "token",
                            "key",
                            "auth",
                            "credential",
                            "sig",
                            "session",
                        ]
                            .iter()
                            .any(|w| k.to_ascii_lowercase().contains(w)) =>
                    {
                        changed = true;
                        format!("{k}=<redacted>")
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            let mut t = format!("{path}?{}", params.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
        None => tail.to_owned(),
    };
    changed.then(|| format!("{scheme}{sep}{authority}{tail}"))
}

fn revoke(snapshot: &SnapshotSource, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(relay) = &snapshot.relay else {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no [relay] configured"}),
        );
    };
    let user = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "user")
            .map(|(_, v)| v.into_owned())
    });
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "give the user: ?user=NAME (a static user or a token's sub)"}),
        );
    };
    // A TURN user name is at most 512 bytes (a REST credential's
    // `expiry:user` included); control characters would forge log lines.
    if user.len() > 512 || user.chars().any(char::is_control) {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "the user must be at most 512 bytes with no control characters"}),
        );
    }
    if req.method() == Method::DELETE {
        let was = relay.unrevoke(&user);
        // Debug-quoted: whatever the name holds stays on one log line.
        tracing::info!(user = ?user, was_revoked = was, "relay revocation lifted");
        return json(
            StatusCode::OK,
            &serde_json::json!({"user": user, "was_revoked": was}),
        );
    }
    let deleted = relay.revoke(&user);
    tracing::info!(user = ?user, allocations_deleted = deleted, "relay user revoked");
    json(
        StatusCode::OK,
        &serde_json::json!({
            "user": user,
            "allocations_deleted": deleted,
            "revoked_until": relay.revoked_until(&user),
        }),
    )
}

fn geo_status(snap: &crate::config::Snapshot) -> serde_json::Value {
    let Some(p) = &snap.geo else {
        return serde_json::json!({"enabled": false});
    };
    let ids = || (0..p.regions().len() as u16).map(crate::geo::RegionId);
    let table = |client: Option<crate::geo::RegionId>| {
        ids()
            .filter_map(|s| {
                p.configured_latency_ms(client, s)
                    .map(|ms| (p.name(s).to_string(), ms))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let latency: std::collections::BTreeMap<String, _> = ids()
        .map(|c| (p.name(c).to_string(), table(Some(c))))
        .filter(|(_, row)| !row.is_empty())
        .collect();
    let mut services: Vec<_> = snap
        .dispatcher
        .services()
        .filter_map(|s| s.geo_status())
        .collect();
    services.sort_by(|a, b| a.service.cmp(&b.service));
    serde_json::json!({
        "enabled": true,
        "regions": p.regions().iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "default_region": p.default_region().map(|r| p.name(r).to_string()),
        "latency_ms": latency,
        "default_latency_ms": table(None),
        "unknown_latency_ms": p.unknown_latency_ms,
        "hysteresis_ms": p.hysteresis_ms,
        "failback_seconds": p.failback.as_secs(),
        "geoip_cache_entries": p.locator.cache.capacity(),
        "services": services,
    })
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_secret_values_and_url_passwords_but_not_where_secrets_live() {
        let mut v = serde_json::json!({
            "relay": {
                "users": [{"name": "ops", "password": "pw-1", "password_env": "OPS_PW"}],
                "secret_file": "/run/secrets/turn",
                "credential_ttl_seconds": 600
            },
            "auth": {"max_token_bytes": 8192, "keys": [{"secret_env": "HMAC", "kid": "a"}]},
            "rate_limit": {"redis_url": "rediss://gw:hunter2@cache:6380/1", "other": "http://host/a@b"},
            "admin": {"token_env": "AETHER_ADMIN_TOKEN", "token": "plain"}
        });
        redact(&mut v);
        assert_eq!(v["relay"]["users"][0]["password"], "<redacted>");
        assert_eq!(v["relay"]["users"][0]["password_env"], "OPS_PW");
        assert_eq!(v["relay"]["users"][0]["name"], "ops");
        assert_eq!(v["relay"]["secret_file"], "/run/secrets/turn");
        assert_eq!(v["relay"]["credential_ttl_seconds"], 600);
        assert_eq!(v["auth"]["max_token_bytes"], 8192);
        assert_eq!(v["auth"]["keys"][0]["secret_env"], "HMAC");
        assert_eq!(
            v["rate_limit"]["redis_url"],
            "rediss://gw:<redacted>@cache:6380/1"
        );
        // An @ in the path is not userinfo.
        assert_eq!(v["rate_limit"]["other"], "http://host/a@b");
        assert_eq!(
            redact_url("redis://gw:hun@ter2@cache:6379/0").as_deref(),
            Some("redis://gw:<redacted>@cache:6379/0")
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=0&pass=hunter2").as_deref(),
            Some("redis+unix:///run/redis.sock?db=0&pass=<redacted>")
        );
        assert_eq!(redact_url("https://idp.example/jwks.json?v=2"), None);
        // Redis's socket forms have no authority; the password is a parameter.
        assert_eq!(
            redact_url("unix:/run/redis.sock?db=0&pass=hunter2").as_deref(),
            Some("unix:/run/redis.sock?db=0&pass=<redacted>")
        );
        assert_eq!(
            redact_url("redis+unix:/run/redis.sock?pass=hunter2").as_deref(),
            Some("redis+unix:/run/redis.sock?pass=<redacted>")
        );
        assert_eq!(redact_url("unix:/run/redis.sock?db=0"), None);
        assert_eq!(
            redact_url("C:\\path?token=x").as_deref(),
            Some("C:\\path?token=<redacted>")
        );
        assert_eq!(
            redact_url("redis://hunter2@cache:6379").as_deref(),
            Some("redis://<redacted>@cache:6379")
        );
        assert_eq!(
            redact_url(
                "https://b.s3.example/jwks.json?X-Amz-Signature=abc&X-Amz-Expires=60&sig=def"
            )
            .as_deref(),
            Some(
                "https://b.s3.example/jwks.json?X-Amz-Signature=<redacted>&X-Amz-Expires=60&sig=<redacted>"
            )
        );
        assert_eq!(v["admin"]["token_env"], "AETHER_ADMIN_TOKEN");
        assert_eq!(v["admin"]["token"], "<redacted>");
    }

    #[test]
    fn the_token_is_admitted_only_as_a_bearer_credential_of_the_same_bytes() {
        let t = AdminToken::new("0123456789abcdef");
        let with = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(t.admits(&with("Bearer 0123456789abcdef")));
        assert!(t.admits(&with("bearer 0123456789abcdef")));
        assert!(!t.admits(&with("Bearer 0123456789abcdeF")));
        assert!(!t.admits(&with("Bearer 0123456789abcde")));
        assert!(!t.admits(&with("Basic 0123456789abcdef")));
        assert!(!t.admits(&with("0123456789abcdef")));
        assert!(!t.admits(&http::HeaderMap::new()));
        let mut two = with("Bearer 0123456789abcdef");
        two.append(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(!t.admits(&two), "several Authorization headers are refused");
        assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
    }
}
