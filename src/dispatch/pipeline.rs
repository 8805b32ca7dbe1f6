//! The request pipeline: one function, each step in the order it must run.
//!
//! accept (connection cap, in `runtime`) → parse (hyper: head size and time
//! limits) → request id → client address → path normalisation → route match
//! (404/405/OPTIONS) → auth (401/403) → rate limits (429) → body cap (413) →
//! upstream request (header hygiene, identity and forwarding headers) →
//! dispatch (endpoint choice, timeout, retry) → response (request id and
//! `RateLimit-*` headers; WebSocket tunnel spawned on 101).
//!
//! Geo routing slots in between the rate limits and dispatch: it needs the
//! route and the client address, and must run before any byte goes upstream.

use crate::upstream::balance::stable_hash;
use crate::upstream::{HashKey, RequestHash};
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
use crate::auth::{AuthError, AuthMiddleware, AuthMode, RouteAuth, Verified};
use crate::body::{RequestBody, ResponseBody};
use crate::config::Snapshot;
use crate::error::{Blame, Error, error_response};
use crate::geo::{ChosenRegion, GeoHints, Reason};
use crate::metrics::access::{AccessLine, Exchange};
use crate::ratelimit::{KeyInputs, RateLimitStatus, SharedRule};
use crate::router::{Lookup, normalize_path_with};

/// What the pipeline knows about the client connection, computed once per connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    /// The socket peer's IP, canonical (IPv4-mapped IPv6 as IPv4).
    pub peer_ip: IpAddr,
    /// The same as a header value, reused by every request.
    peer_ip_header: HeaderValue,
    /// The connection's `max_connections` slot; tunnels hold it too.
    slot: Arc<ConnSlot>,
    /// The connection came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

impl ConnInfo {
    pub(crate) fn new(peer: SocketAddr, slot: ConnSlot) -> Self {
        let peer_ip = super::forwarded::canonical(peer.ip());
        ConnInfo {
            peer_ip,
            peer_ip_header: ip_header(peer_ip),
            slot: Arc::new(slot),
            tls: false,
        }
    }

    /// The same, for a connection that came over TLS.
    pub(crate) fn over_tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

/// What a client connection holds from its accept until it and every
/// tunnel it opened have closed: its `max_connections` slot and its count
/// in the open-connections gauge (so the gauge shows what the cap counts,
/// TLS handshakes and WebSockets included).
pub(crate) struct ConnSlot {
    pub(crate) _permit: tokio::sync::OwnedSemaphorePermit,
    pub(crate) _open: crate::metrics::GaugeGuard,
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnSlot")
    }
}

/// State shared by every connection of one running gateway.
pub(crate) struct Shared {
    pub snapshot: arc_swap::ArcSwap<Snapshot>,
    /// Upgraded (WebSocket) tunnels, waited for on graceful shutdown.
    pub tunnels: TaskTracker,
    /// Cancelled when the drain deadline passes: tunnels still open are cut.
    pub hard_stop: tokio_util::sync::CancellationToken,
    /// A tunnel with no bytes either way for this long is closed.
    pub tunnel_idle_timeout: std::time::Duration,
    /// The STUN/TURN relay, when `[relay]` is configured (the admin API
    /// reports and revokes through it).
    pub relay: Option<Arc<crate::relay::Relay>>,
    /// Asks for config reloads; the status of the last one.
    pub reload: crate::runtime::reload::ReloadHandle,
    /// Counters that outlive any one config snapshot.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set when a graceful shutdown begins (`/readyz` answers 503).
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// The listener's certificates, with `[[server.tls]]` (for `/metrics`).
    pub tls: Option<Arc<crate::tls::CertStore>>,
    /// The OTLP span exporter, with `[log] otlp_endpoint`.
    #[cfg(feature = "otel")]
    pub otel: Option<Arc<crate::metrics::otel::SpanExport>>,
}

impl Shared {
    /// True once a graceful shutdown has begun.
    pub(crate) fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether requests' spans are exported (their new traces are sampled).
    fn exports_spans(&self) -> bool {
        #[cfg(feature = "otel")]
        return self.otel.is_some();
        #[cfg(not(feature = "otel"))]
        false
    }
}

/// Handle one request end to end; never fails: errors become JSON responses.
///
/// `access` gets the request's access-log line (written when it drops)
/// when `[log] access_log` is on.
pub(crate) async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
    access: &mut Option<Box<AccessLine>>,
) -> Response<ResponseBody> {
    // quanta: a TSC read, cheaper than `Instant::now` on the request path.
    let started = quanta::Instant::now();
    // One snapshot for the whole request: a reload never shows half of each config.
    let snap = shared.snapshot.load();
    let request_id = h::request_id(req.headers());
    let client_ip = snap.trusted_proxies.client_ip(conn.peer_ip, req.headers());
    let method = req.method().clone();
    // Shared bytes: the path is logged without copying it.
    let log = crate::metrics::access::enabled(&snap);
    let uri = (log || shared.exports_spans()).then(|| req.uri().clone());
    let mut rate_status = None;
    let mut exchange = Exchange::default();
    let mut resp = match proxy(
        &snap,
        shared,
        conn,
        client_ip,
        &request_id,
        &mut rate_status,
        &mut exchange,
        req,
    )
    .await
    {
        Ok(resp) => resp,
        Err(err) => {
            let id = request_id.to_str().unwrap_or_default();
            let method = logged_method(&method);
            match err.blame() {
                // Refused credentials are worth seeing at the default level
                // (the reason only: the token itself is never logged).
                Blame::Client if matches!(err, Error::Unauthorized(_) | Error::Forbidden) => {
                    let reason = match &err {
                        Error::Unauthorized(e) => e.reason(),
                        _ => "forbidden",
                    };
                    shared.metrics.auth_failure(reason);
                    tracing::info!(request_id = id, %client_ip, %method, reason, error = %err, "request refused by auth")
                }
                Blame::Client => {
                    tracing::debug!(request_id = id, %client_ip, %method, error = %err, "request rejected")
                }
                Blame::Upstream if matches!(err, Error::AuthUnavailable) => {
                    shared.metrics.auth_failure("keys_unavailable");
                    tracing::warn!(request_id = id, %client_ip, %method, "request refused: no signing keys loaded yet (JWKS not fetched)")
                }
                Blame::Upstream => {
                    tracing::warn!(request_id = id, %client_ip, %method, error = %err, "upstream failure")
                }
                Blame::Internal => {
                    tracing::error!(request_id = id, %client_ip, %method, error = %err, "internal error")
                }
            }
            error_response(&err, &request_id)
        }
    };
    let status = resp.status().as_u16();
    let route_metrics = match &exchange.route {
        Some(r) => shared.metrics.route(r, &snap.rate_limits.global),
        None => shared.metrics.unrouted(),
    };
    route_metrics.answered(status, started.elapsed(), exchange.upstream);
    if let Some(uri) = uri {
        *access = Some(Box::new(AccessLine {
            started,
            method,
            uri,
            client_ip,
            request_id: request_id.clone(),
            status,
            region: resp.headers().get(&super::X_AETHER_REGION).cloned(),
            endpoint: exchange.endpoint.or_else(|| resp.body().endpoint()),
            exchange,
            bytes_out: 0,
            log,
            #[cfg(feature = "otel")]
            export: shared.otel.clone(),
        }));
    }
    resp.headers_mut().insert(&X_REQUEST_ID, request_id);
    // Every answer of a limited route says where the client stands, the
    // 429 and upstream errors included.
    if let Some(status) = &rate_status {
        crate::ratelimit::write_headers(
            status,
            snap.rate_limits.x_ratelimit_headers,
            resp.headers_mut(),
        );
    }
    resp
}

/// A request's method as log lines carry it (cut: see `MAX_LOGGED_METHOD`).
fn logged_method(method: &Method) -> &str {
    crate::metrics::access::clip(method.as_str(), crate::metrics::access::MAX_LOGGED_METHOD)
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    snap: &Snapshot,
    shared: &Shared,
    conn: &ConnInfo,
    client_ip: IpAddr,
    request_id: &HeaderValue,
    rate_status: &mut Option<RateLimitStatus>,
    exchange: &mut Exchange,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    // Framing and authority first: a request we would refuse anyway gets no
    // routing answer that could tell an attacker about the route table.
    let original_host = request_authority(&req)?;
    // Host needs rewriting only when the target's authority won over it.
    let host_from_target = req.uri().authority().is_some();
    check_transfer_coding(req.headers())?;
    if req.method() == Method::OPTIONS && req.uri().path() == "*" {
        return Ok(options_response(None));
    }
    // Normalise first: the router and the upstream must see the same path.
    // (A cheap clone of shared bytes, so the path can outlive the request's parts.)
    let uri = req.uri().clone();
    let path = normalize_path_with(uri.path(), snap.path_options)?;
    let m = match snap.router.lookup(req.method(), &path)? {
        Lookup::Options(allow) => return Ok(options_response(Some(allow))),
        Lookup::Route(m) => m,
    };
    let route = m.entry;
    exchange.route = Some(Arc::clone(route));
    let route_metrics = shared.metrics.route(route, &snap.rate_limits.global);
    // The consistent-hash key, while the path parameters are at hand. A
    // header key is the dispatcher's to read, from what goes upstream: the
    // client's header as it arrived may be one the gateway removes or
    // replaces (an identity header, `X-Real-IP`), and hashing on it would
    // let a client pick its shard.
    let mut hash = match &route.policy.hash_key {
        Some(HashKey::Param(p)) => m.params.get(p).map(|v| stable_hash(v.as_bytes())),
        Some(HashKey::Header(_) | HashKey::User) | None => None,
    };

    // Auth right after routing (the route says what it needs) and before
    // anything else is read or sent: an unauthenticated client learns
    // nothing about body limits or upstreams.
    let verified = match &snap.auth {
        Some(auth) => authorize(auth, &route.policy.auth, req.headers()).await?,
        None => None,
    };
    exchange.user = verified.as_ref().map(|v| Arc::clone(&v.token));

    if let (Some(HashKey::User), Some(v)) = (&route.policy.hash_key, &verified) {
        hash = Some(stable_hash(v.token.subject.as_bytes()));
    }

    // Rate limits after auth (a per-user limit needs the user) and before
    // the body is read or anything goes upstream.
    if route.policy.rate_limit.is_some() || !snap.rate_limits.global.is_empty() {
        let inputs = KeyInputs {
            user: verified.as_ref().and_then(|v| v.user_key.as_ref()),
            ip: snap.rate_limits.client_key(client_ip),
            headers: req.headers(),
            route: &route.policy.name,
        };
        let rules = route
            .policy
            .rate_limit
            .iter()
            .chain(&snap.rate_limits.global);
        rate_limit(rules, &inputs, rate_status, route_metrics).await?;
    }

    // Routes the gateway answers itself, after auth and limits like any other.
    if let Some(crate::router::Internal::VoiceCredentials) = route.policy.internal {
        let peer_trusted = snap.trusted_proxies.contains(conn.peer_ip);
        return voice_credentials(
            snap,
            shared,
            verified.as_deref(),
            client_ip,
            peer_trusted,
            &req,
        );
    }

    let limit = route
        .policy
        .max_request_body_bytes
        .unwrap_or(snap.max_request_body_bytes);
    if content_length(req.headers()).is_some_and(|len| len > limit) {
        return Err(Error::PayloadTooLarge);
    }

    let upgrade =
        req.version() == Version::HTTP_11 && h::is_websocket_upgrade(req.method(), req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let version = req.version();
    let peer_trusted = snap.trusted_proxies.contains(conn.peer_ip);
    // Geo: where the client is (the trusted region header, the operator's
    // networks, GeoIP, the default) and the region its session sticks to;
    // the dispatcher chooses the region per service with these.
    let hints = match &snap.geo {
        Some(geo) => {
            let hints = GeoHints {
                client: geo.locate(client_ip, req.headers(), peer_trusted).region,
                sticky: geo.sticky_region(req.headers()),
            };
            if let Some(h) = geo.region_header().filter(|_| !peer_trusted) {
                // A client's own claim of where it is: never passed on.
                req.headers_mut().remove(h);
            }
            Some(hints)
        }
        None => None,
    };
    let (mut parts, body) = req.into_parts();
    if let Some(h) = hash {
        parts.extensions.insert(RequestHash(h));
    }

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
    let ids = &snap.identity_headers;
    let identity = [&ids.user, &ids.roles];
    // One look at the names says which removals below have work to do.
    let mut seen = h::Seen::scan(hdrs, peer_trusted, identity);
    if h::strip_seen_hop_by_hop(hdrs, upgrade, seen) {
        // `Connection` named other fields, now gone: look again, so that
        // nothing below takes a removed field (a trusted proxy's
        // `X-Forwarded-Proto`, say) for one still there.
        seen = h::Seen::scan(hdrs, peer_trusted, identity);
    }
    if seen.has(h::Seen::SPOOFABLE) {
        h::remove_spoofable(hdrs, peer_trusted, identity);
    }
    if !route.policy.auth.forward_authorization && seen.has(h::Seen::AUTHORIZATION) {
        hdrs.remove(header::AUTHORIZATION);
    }
    // The fields the gateway sets travel beside the map (see `AddedFields`).
    let mut added = h::AddedFields::default();
    if let Some(v) = &verified {
        added.user = v.user_header.clone().map(|u| (ids.user.clone(), u));
        added.roles = v.roles_header.clone().map(|r| (ids.roles.clone(), r));
    }
    if version == Version::HTTP_2 {
        h::join_cookies(hdrs);
    }
    // hyper answers 100-continue itself when we start reading the body.
    if seen.has(h::Seen::EXPECT) {
        hdrs.remove(header::EXPECT);
    }
    // Request trailers are not forwarded (see `body.rs`): announce none.
    if seen.has(h::Seen::TRAILER) {
        hdrs.remove(header::TRAILER);
    }
    if let Some(host) = original_host.as_ref().filter(|_| host_from_target) {
        hdrs.insert(header::HOST, host.clone());
    }
    forwarding_headers(
        hdrs,
        &mut added,
        seen,
        conn,
        peer_trusted,
        original_host.as_ref(),
        version,
    );
    // The resolved client, so upstreams need not repeat the trusted-proxy walk.
    added.real_ip = Some(if client_ip == conn.peer_ip {
        conn.peer_ip_header.clone()
    } else {
        ip_header(client_ip)
    });
    if seen.has(h::Seen::REAL_IP) {
        hdrs.remove(&X_REAL_IP);
    }
    added.request_id = Some(request_id.clone());
    if seen.has(h::Seen::REQUEST_ID) {
        hdrs.remove(&X_REQUEST_ID);
    }
    let continue_trace = snap.incoming_trace.continues(peer_trusted);
    let (trace, incoming_parent) = crate::metrics::traceparent::propagate_seen(
        hdrs,
        shared.exports_spans(),
        continue_trace,
        seen.has(h::Seen::TRACEPARENT),
        seen.has(h::Seen::TRACESTATE),
    );
    added.traceparent = Some(trace.header_value());
    exchange.trace = Some(trace);
    exchange.incoming_parent = incoming_parent;

    let ctx = DispatchContext {
        route: Arc::clone(route),
        token: verified.map(|v| Arc::clone(&v.token)),
        client_region: String::new(),
    };
    let upstream_req = Request::from_parts(
        parts,
        RequestBody::streaming(body, limit, snap.client_body_timeout),
    );
    if crate::metrics::access::enabled(snap) {
        exchange.body = upstream_req.body().progress();
    }
    let sent = quanta::Instant::now();
    let resp = snap
        .dispatcher
        .dispatch_hinted(ctx, upstream_req, hints, upgrade, &added)
        .await;
    exchange.upstream = Some(sent.elapsed());
    let mut resp = resp?;
    // A session gets its home region once, from a choice made for
    // proximity; an existing home is never rewritten (it is ignored while
    // it cannot serve, and used again once it can). A failover, a pinned
    // route, a retry elsewhere or a service with one region says nothing
    // about where the session belongs.
    if let (Some(geo), Some(GeoHints { sticky: None, .. })) = (&snap.geo, hints)
        && let Some(chosen) = resp.extensions().get::<ChosenRegion>()
        && chosen.choice
        && matches!(chosen.reason, Reason::Nearest | Reason::Hysteresis)
        && let Some(cookie) = geo.sticky_cookie(chosen.region)
    {
        resp.headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }

    if let Some(on_client) = client_upgrade
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let on_upstream = hyper::upgrade::on(&mut resp);
        // The access line of the 101 names the endpoint, taken with the
        // in-flight guard below.
        exchange.endpoint = resp.body().endpoint();
        // The tunnel is a request in flight at its endpoint until it closes
        // (the circuit breaker counts it).
        let in_flight = resp.body_mut().take_in_flight();
        let stop = shared.hard_stop.clone();
        let idle = shared.tunnel_idle_timeout;
        // The tunnel keeps the connection's slot until it closes.
        let slot = Arc::clone(&conn.slot);
        let open = crate::metrics::GaugeGuard::inc(&shared.metrics.websockets);
        let close_line = crate::metrics::access::enabled(snap).then(|| {
            crate::metrics::access::TunnelLine::new(
                request_id.clone(),
                Arc::clone(&route.policy.name),
                client_ip,
                exchange,
            )
        });
        shared.tunnels.spawn(async move {
            let _slot = slot;
            let _in_flight = in_flight;
            let _open = open;
            let carried = super::tunnel::Carried::default();
            let tunnel = async {
                let (client, upstream) = tokio::try_join!(on_client, on_upstream)?;
                let ended = super::tunnel::run(
                    TokioIo::new(client),
                    TokioIo::new(upstream),
                    idle,
                    &carried,
                )
                .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(ended)
            };
            let how = tokio::select! {
                r = tunnel => match r {
                    Ok(super::tunnel::Ended::Closed) => "closed",
                    Ok(super::tunnel::Ended::Idle) => "idle",
                    Err(e) => {
                        tracing::debug!(error = %e, "tunnel closed with an error");
                        "error"
                    }
                },
                _ = stop.cancelled() => "shutdown",
            };
            if let Some(line) = close_line {
                line.write(&carried, how);
            }
        });
    }
    Ok(resp)
}

/// Check the route's auth requirement: the verified token, if one was
/// needed or offered.
async fn authorize(
    auth: &AuthMiddleware,
    rule: &RouteAuth,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<Verified>>, Error> {
    if rule.mode == AuthMode::Public {
        return Ok(None);
    }
    let token = match crate::auth::bearer(headers) {
        Ok(t) => t,
        Err(AuthError::Missing) if rule.mode == AuthMode::Optional => return Ok(None),
        Err(e) => return Err(Error::Unauthorized(e)),
    };
    let verified = auth.authenticate(token).await.map_err(|e| match e {
        AuthError::KeysUnavailable => Error::AuthUnavailable,
        e => Error::Unauthorized(e),
    })?;
    if !rule.permits(&verified.token) {
        return Err(Error::Forbidden);
    }
    Ok(Some(verified))
}

/// Count the request under every rule that applies; all must allow it.
///
/// `out` gets the status the response headers report (the tightest
/// rule's); a refusal is the 429 with the longest wait among the rules that
/// refused. A rule that allowed has counted the request even when another
/// refuses: the client did send it.
async fn rate_limit<'a>(
    rules: impl Iterator<Item = &'a SharedRule>,
    inputs: &KeyInputs<'_>,
    out: &mut Option<RateLimitStatus>,
    metrics: &crate::metrics::RouteMetrics,
) -> Result<(), Error> {
    let mut tightest: Option<RateLimitStatus> = None;
    let mut retry_after: Option<u64> = None;
    for (i, rule) in rules.enumerate() {
        let s = rule.check(inputs).await;
        metrics.rate_limited(i, s.allowed);
        if !s.allowed {
            let secs = s.retry_after_seconds().max(1);
            retry_after = Some(retry_after.map_or(secs, |r| r.max(secs)));
        }
        tightest = Some(tightest.map_or(s, |t| t.tighter(s)));
    }
    *out = tightest;
    match retry_after {
        Some(retry_after_seconds) => Err(Error::TooManyRequests {
            retry_after_seconds,
        }),
        None => Ok(()),
    }
}

/// `X-Forwarded-For` (appended to), `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (set, unless a trusted proxy set them) and `Via`
/// (appended to) into `added`; a client's field that ours replaces is
/// removed from the map.
fn forwarding_headers(
    hdrs: &mut http::HeaderMap,
    added: &mut h::AddedFields,
    seen: h::Seen,
    conn: &ConnInfo,
    peer_trusted: bool,
    host: Option<&HeaderValue>,
    version: Version,
) {
    let appended = match seen.has(h::Seen::FORWARDED_FOR) {
        true => match hdrs.entry(&X_FORWARDED_FOR) {
            http::header::Entry::Occupied(e) => {
                let mut xff = Vec::with_capacity(64);
                for v in e.remove_entry_mult().1 {
                    // An empty field adds no hop (and no leading ", ").
                    let v = v.as_bytes().trim_ascii();
                    if !v.is_empty() {
                        xff.extend_from_slice(v);
                        xff.extend_from_slice(b", ");
                    }
                }
                xff.extend_from_slice(conn.peer_ip_header.as_bytes());
                Some(
                    HeaderValue::from_bytes(&xff)
                        .expect("header values joined by \", \" are a header value"),
                )
            }
            http::header::Entry::Vacant(_) => None,
        },
        false => None,
    };
    added.forwarded_for = Some(appended.unwrap_or_else(|| conn.peer_ip_header.clone()));

    // A trusted proxy's own value stays; anyone else's is replaced.
    if !(peer_trusted && seen.has(h::Seen::FORWARDED_PROTO)) {
        if seen.has(h::Seen::FORWARDED_PROTO) {
            hdrs.remove(&X_FORWARDED_PROTO);
        }
        added.forwarded_proto = Some(if conn.tls { "https" } else { "http" });
    }
    if !(peer_trusted && seen.has(h::Seen::FORWARDED_HOST)) {
        if seen.has(h::Seen::FORWARDED_HOST) {
            hdrs.remove(&X_FORWARDED_HOST);
        }
        added.forwarded_host = host.cloned();
    }
    added.via = Some(match version {
        Version::HTTP_2 => "2 aether-gateway",
        Version::HTTP_10 => "1.0 aether-gateway",
        _ => "1.1 aether-gateway",
    });
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

/// The request's authority, validated (RFC 9112 §3.2, RFC 9113 §8.3.1):
/// at most one `Host`, a well-formed `host[:port]` without userinfo; the
/// target's authority (HTTP/2 `:authority`, HTTP/1.1 absolute-form) wins over
/// `Host`, and on HTTP/2 the two must agree.
fn request_authority(req: &Request<Incoming>) -> Result<Option<HeaderValue>, Error> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Error::BadRequest("more than one Host header"));
    }
    if let Some(h) = host {
        valid_authority(h.as_bytes())?;
    }
    match req.uri().authority() {
        Some(a) => {
            valid_authority(a.as_str().as_bytes())?;
            if req.version() == Version::HTTP_11 && host.is_none() {
                // RFC 9112 §3.2: Host is required even with an absolute-form target.
                return Err(Error::BadRequest("HTTP/1.1 request without Host"));
            }
            if req.version() == Version::HTTP_2
                && host.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()))
            {
                return Err(Error::BadRequest("Host and :authority differ"));
            }
            Ok(HeaderValue::from_str(a.as_str()).ok())
        }
        None => match host {
            Some(h) => Ok(Some(h.clone())),
            None if req.version() == Version::HTTP_11 => {
                Err(Error::BadRequest("HTTP/1.1 request without Host"))
            }
            None => Ok(None),
        },
    }
}

/// `host[:port]` as RFC 9110 §7.2 wants it, strictly: a name of letters,
/// digits, `-`, `.`, `_` or an IPv4 address, or a bracketed IPv6 address
/// without zone id; a port of 1–5 digits that fits in 16 bits; no userinfo.
fn valid_authority(value: &[u8]) -> Result<(), Error> {
    /// Letters, digits, `-`, `.`, `_`: one load per byte of a Host.
    const HOST_BYTE: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_';
            b += 1;
        }
        t
    };
    const BAD: Error = Error::BadRequest("invalid Host header");
    // Stricter than `http::uri::Authority`, so that parse is not needed too;
    // on bytes: only a bracketed IPv6 address is read as text.
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let close = rest.iter().position(|&b| b == b']').ok_or(BAD)?;
            let ip = std::str::from_utf8(&rest[..close]).map_err(|_| BAD)?;
            let port = match &rest[close + 1..] {
                [] => None,
                [b':', p @ ..] => Some(p),
                _ => return Err(BAD),
            };
            (ip.parse::<std::net::Ipv6Addr>().is_ok(), port)
        }
        None => {
            let (host, port) = match value.iter().position(|&b| b == b':') {
                Some(i) => (&value[..i], Some(&value[i + 1..])),
                None => (value, None),
            };
            let ok = !host.is_empty() && host.iter().all(|&b| HOST_BYTE[usize::from(b)]);
            (ok, port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.iter().all(u8::is_ascii_digit)
            && p.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= u32::from(u16::MAX)
    });
    if host_ok && port_ok { Ok(()) } else { Err(BAD) }
}

/// Only `chunked` alone is accepted: any other coding would reach the
/// upstream unannounced once we re-frame the body (RFC 9112 §6.1: 501).
fn check_transfer_coding(headers: &http::HeaderMap) -> Result<(), Error> {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    match codings.next() {
        None => Ok(()),
        Some(c) if c.eq_ignore_ascii_case(b"chunked") && codings.next().is_none() => Ok(()),
        Some(_) => Err(Error::NotImplemented("transfer-coding other than chunked")),
    }
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

/// `POST /api/v1/voice/credentials`: short-lived TURN credentials for the
/// relay closest to the client (or `?region=NAME`'s), as JSON.
fn voice_credentials(
    snap: &Snapshot,
    shared: &Shared,
    verified: Option<&Verified>,
    client_ip: IpAddr,
    peer_trusted: bool,
    req: &Request<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    let issuer = snap
        .voice
        .as_ref()
        .ok_or(Error::Internal("credentials route without an issuer"))?;
    let user = &verified
        .ok_or(Error::Internal("credentials route without a token"))?
        .token
        .subject;
    if user.is_empty() {
        return Err(Error::BadRequest(
            "the token has an empty sub: no TURN credential for it",
        ));
    }
    // A revoked user would get credentials the relay refuses: say so here.
    if shared
        .relay
        .as_ref()
        .is_some_and(|r| r.revoked_until(user).is_some())
    {
        return Err(Error::Forbidden);
    }
    let region = match req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("region=")))
    {
        Some(name) => crate::RelayRegion::Named(name.to_owned()),
        None => crate::RelayRegion::Closest,
    };
    let client = snap
        .geo
        .as_ref()
        .and_then(|g| g.locate(client_ip, req.headers(), peer_trusted).region);
    let relay = issuer
        .relay_for(&region, snap.geo.as_deref(), client)
        .ok_or(Error::BadRequest("no relay in the requested region"))?;
    let issued = issuer
        .issue_now(user, relay)
        .map_err(|_| Error::BadRequest("the user name is too long for a TURN credential"))?;
    let body = serde_json::to_vec(&issued).map_err(|_| Error::Internal("credentials JSON"))?;
    let mut resp = Response::new(ResponseBody::full(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A credential is a secret: never stored by a cache on the way.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn options_response(allow: Option<HeaderValue>) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    if let Some(allow) = allow {
        resp.headers_mut().insert(header::ALLOW, allow);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::valid_authority;
    use proptest::prelude::*;

    /// The rule as first written, on text: the byte version must agree.
    fn reference(value: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(value) else {
            return false;
        };
        let (host_ok, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let Some((ip, after)) = rest.split_once(']') else {
                    return false;
                };
                let port = match after {
                    "" => None,
                    p => match p.strip_prefix(':') {
                        Some(p) => Some(p),
                        None => return false,
                    },
                };
                (ip.parse::<std::net::Ipv6Addr>().is_ok(), port)
            }
            None => {
                let (host, port) = match s.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (s, None),
                };
                let ok = !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
                (ok, port)
            }
        };
        let port_ok = port.is_none_or(|p| {
            (1..=5).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok()
        });
        host_ok && port_ok
    }

    #[test]
    fn authorities() {
        let good: &[&str] = &[
            "play.example",
            "play.example:443",
            "a:1",
            "10.0.0.1:65535",
            "[::1]",
            "[2001:db8::7]:8080",
            "under_score.example",
            "x:00080",
        ];
        let bad: &[&str] = &[
            "",
            ":80",
            "a:",
            "a:65536",
            "a:123456",
            "a:8o",
            "user@host",
            "a b",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[fe80::1%eth0]",
            "[not-ip]",
            "a:1:2",
            "caf\u{e9}.example",
        ];
        for a in good {
            assert!(valid_authority(a.as_bytes()).is_ok(), "{a:?} refused");
        }
        for a in bad {
            assert!(valid_authority(a.as_bytes()).is_err(), "{a:?} accepted");
        }
        assert!(valid_authority(b"a\xff.example").is_err());
    }

    proptest! {
        #[test]
        fn bytes_agree_with_the_text_rule(
            v in proptest::collection::vec(
                prop_oneof![
                    Just(b'['), Just(b']'), Just(b':'), Just(b'.'), Just(b'-'), Just(b'_'),
                    Just(b'@'), Just(b'%'), b'0'..=b'9', b'a'..=b'f', Just(b'z'), any::<u8>(),
                ],
                0..24,
            )
        ) {
            prop_assert_eq!(valid_authority(&v).is_ok(), reference(&v), "{:?}", String::from_utf8_lossy(&v));
        }
    }
}
