//! The request pipeline: one function, each step in the order it must run.
//!
//! accept (connection cap, in `runtime`) → parse (hyper: head size and time
//! limits) → request id → client address → path normalisation → route match
//! (404/405/OPTIONS) → body cap (413) → upstream request (header hygiene,
//! forwarding headers) → dispatch (endpoint choice, timeout, retry) →
//! response (request id echoed; WebSocket tunnel spawned on 101).
//!
//! Later steps (auth, rate limit, geo) slot in between route match and
//! dispatch: they need the route and the client address, and must run before
//! any byte goes upstream.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use super::DispatchContext;
use super::headers::{
    self as h, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID,
};
use crate::body::{RequestBody, ResponseBody};
use crate::config::Snapshot;
use crate::error::{Blame, Error, error_response};
use crate::router::{Lookup, normalize_path};

/// What the pipeline knows about the client connection, computed once per connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// The socket peer.
    pub peer: SocketAddr,
    /// The peer's IP (canonical) as a header value, reused by every request.
    pub peer_ip: IpAddr,
    peer_ip_header: HeaderValue,
}

impl ConnInfo {
    pub(crate) fn new(peer: SocketAddr) -> Self {
        let peer_ip = super::forwarded::canonical(peer.ip());
        ConnInfo {
            peer,
            peer_ip,
            peer_ip_header: ip_header(peer_ip),
        }
    }
}

/// State shared by every connection of one running gateway.
pub(crate) struct Shared {
    pub snapshot: arc_swap::ArcSwap<Snapshot>,
    /// Upgraded (WebSocket) tunnels, waited for on graceful shutdown.
    pub tunnels: TaskTracker,
    /// Cancelled when the drain deadline passes: tunnels still open are cut.
    pub hard_stop: tokio_util::sync::CancellationToken,
}

/// Handle one request end to end; never fails: errors become JSON responses.
pub(crate) async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    // One snapshot for the whole request: a reload never shows half of each config.
    let snap = shared.snapshot.load();
    let request_id = h::request_id(req.headers());
    let client_ip = snap
        .trusted_proxies
        .client_ip(conn.peer.ip(), req.headers());
    let method = req.method().clone();
    let mut resp = match proxy(&snap, shared, conn, client_ip, &request_id, req).await {
        Ok(resp) => resp,
        Err(err) => {
            match err.blame() {
                Blame::Client => {
                    tracing::debug!(%client_ip, %method, error = %err, "request rejected")
                }
                Blame::Upstream => {
                    tracing::warn!(%client_ip, %method, error = %err, "upstream failure")
                }
                Blame::Internal => {
                    tracing::error!(%client_ip, %method, error = %err, "internal error")
                }
            }
            error_response(&err, &request_id)
        }
    };
    resp.headers_mut().insert(&X_REQUEST_ID, request_id);
    resp
}

async fn proxy(
    snap: &Snapshot,
    shared: &Shared,
    conn: &ConnInfo,
    client_ip: IpAddr,
    request_id: &HeaderValue,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    if req.method() == Method::OPTIONS && req.uri().path() == "*" {
        return Ok(options_response(None));
    }
    // Normalise first: the router and the upstream must see the same path.
    // (A cheap clone of shared bytes, so the path can outlive the request's parts.)
    let uri = req.uri().clone();
    let path = normalize_path(uri.path())?;
    let m = match snap.router.lookup(req.method(), &path)? {
        Lookup::Options(allow) => return Ok(options_response(Some(allow))),
        Lookup::Route(m) => m,
    };
    let route = m.entry;

    let limit = route
        .policy
        .max_request_body_bytes
        .unwrap_or(snap.max_request_body_bytes);
    if content_length(req.headers()).is_some_and(|len| len > limit) {
        return Err(Error::PayloadTooLarge);
    }
    if req.version() == Version::HTTP_11 && !req.headers().contains_key(header::HOST) {
        return Err(Error::BadRequest("HTTP/1.1 request without Host"));
    }

    let upgrade = req.version() == Version::HTTP_11 && h::is_upgrade_request(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let version = req.version();
    // The target's authority wins over Host: HTTP/2's :authority, and an
    // HTTP/1.1 absolute-form target, where RFC 9112 §3.2.2 says Host is ignored.
    let original_host = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let (mut parts, body) = req.into_parts();

    // Upstream URI: origin-form, with the route's prefix rewrite.
    let upstream_path = route.policy.upstream_path(&path);
    let unchanged = upstream_path.as_ref() == parts.uri.path();
    parts.uri = match (unchanged, parts.uri.path_and_query()) {
        (true, Some(pq)) => http::Uri::from(pq.clone()),
        _ => {
            let pq = match parts.uri.query() {
                Some(q) => format!("{upstream_path}?{q}"),
                None => upstream_path.into_owned(),
            };
            http::Uri::from(
                PathAndQuery::try_from(pq)
                    .map_err(|_| Error::BadRequest("unrepresentable path"))?,
            )
        }
    };

    let hdrs = &mut parts.headers;
    h::strip_hop_by_hop(hdrs, upgrade);
    // hyper answers 100-continue itself when we start reading the body.
    hdrs.remove(header::EXPECT);
    if let Some(host) = &original_host {
        hdrs.insert(header::HOST, host.clone());
    }
    forwarding_headers(hdrs, snap, conn, original_host.as_ref(), version);
    // The resolved client, so upstreams need not repeat the trusted-proxy walk.
    let real_ip = if client_ip == conn.peer_ip {
        conn.peer_ip_header.clone()
    } else {
        ip_header(client_ip)
    };
    hdrs.insert(&X_REAL_IP, real_ip);
    hdrs.insert(&X_REQUEST_ID, request_id.clone());

    let ctx = DispatchContext {
        route: Arc::clone(route),
        token: None,
        client_region: String::new(),
    };
    let upstream_req = Request::from_parts(parts, RequestBody::streaming(body, limit));
    let mut resp = snap.dispatcher.dispatch(ctx, upstream_req).await?;

    if let Some(on_client) = client_upgrade
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let on_upstream = hyper::upgrade::on(&mut resp);
        let stop = shared.hard_stop.clone();
        shared.tunnels.spawn(async move {
            let tunnel = async move {
                let (client, upstream) = tokio::try_join!(on_client, on_upstream)?;
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            tokio::select! {
                r = tunnel => if let Err(e) = r {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
    Ok(resp)
}

/// `X-Forwarded-For` (appended), `-Proto`, `-Host` (kept only from trusted proxies) and `Via`.
fn forwarding_headers(
    hdrs: &mut http::HeaderMap,
    snap: &Snapshot,
    conn: &ConnInfo,
    host: Option<&HeaderValue>,
    version: Version,
) {
    let peer_trusted = snap.trusted_proxies.contains(conn.peer_ip);

    if hdrs.contains_key(&X_FORWARDED_FOR) {
        let mut xff = Vec::with_capacity(64);
        for v in hdrs.get_all(&X_FORWARDED_FOR) {
            xff.extend_from_slice(v.as_bytes());
            xff.extend_from_slice(b", ");
        }
        xff.extend_from_slice(conn.peer_ip_header.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&xff) {
            hdrs.insert(&X_FORWARDED_FOR, v);
        }
    } else {
        hdrs.insert(&X_FORWARDED_FOR, conn.peer_ip_header.clone());
    }

    if !(peer_trusted && hdrs.contains_key(&X_FORWARDED_PROTO)) {
        hdrs.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !(peer_trusted && hdrs.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => hdrs.insert(&X_FORWARDED_HOST, h.clone()),
            None => hdrs.remove(&X_FORWARDED_HOST),
        };
    }
    let via = match version {
        Version::HTTP_2 => "2 aether-gateway",
        Version::HTTP_10 => "1.0 aether-gateway",
        _ => "1.1 aether-gateway",
    };
    hdrs.append(header::VIA, HeaderValue::from_static(via));
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn options_response(allow: Option<HeaderValue>) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if let Some(allow) = allow {
        resp.headers_mut().insert(header::ALLOW, allow);
    }
    resp
}
