//! Dispatch: send a routed request to one of its service's endpoints.
//!
//! [`pipeline`] turns a client request into an upstream request (path
//! rewrite, header hygiene, forwarding headers); the [`Dispatcher`] then picks
//! an endpoint (skipping unhealthy, ejected and full ones), sends over a
//! pooled connection with the route's timeout, retries on other endpoints
//! as [`retry`] allows, and reports each attempt's outcome to passive health.

pub mod forwarded;
pub mod headers;
pub(crate) mod pipeline;
pub mod tunnel;

use std::collections::HashMap;
use std::sync::Arc;

use http::{Request, Response, StatusCode, Version, header};

use crate::auth::Token;
use crate::body::{BodyError, RequestBody, ResponseBody};
use crate::error::Error;
use crate::router::RouteEntry;
use crate::upstream::balance::stable_hash;
use crate::upstream::pool::{SendError, UpstreamBody, UpstreamError};
use crate::upstream::{
    BalancePolicy, Endpoint, HashKey, HostPolicy, InFlight, RequestHash, Service, UpstreamProtocol,
};

pub mod retry;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::geo::{ChosenRegion, GeoHints, Reason, RegionId};

/// The response header that says which region answered and why.
pub static X_AETHER_REGION: http::HeaderName = http::HeaderName::from_static("x-aether-region");

/// The region in use, its reason, and whether the service had several
/// regions to choose from, in one word (the attempt future must stay `Send`).
fn encode_chosen(region: Option<RegionId>, reason: Reason, choice: bool) -> u32 {
    match region {
        Some(r) => {
            (1 << 31) | (u32::from(r.0) << 8) | (u32::from(choice) << 7) | reason.index() as u32
        }
        None => 0,
    }
}

/// Add `x-aether-region` and the [`ChosenRegion`] extension to a response
/// of a geo-routed service.
fn label_region(
    service: &Service,
    mut resp: Response<ResponseBody>,
    chosen: u32,
) -> Response<ResponseBody> {
    if chosen == 0 {
        return resp;
    }
    let Some(geo) = service.geo_policy() else {
        return resp;
    };
    let region = RegionId(((chosen >> 8) & 0xFFFF) as u16);
    let reason = Reason::ALL[(chosen & 0x7F) as usize];
    resp.headers_mut()
        .insert(&X_AETHER_REGION, geo.header_value(region, reason).clone());
    // Only the sticky cookie reads it so far (an extension map is an
    // allocation per response).
    if matches!(geo.sticky, crate::geo::Sticky::Cookie(_)) {
        resp.extensions_mut().insert(ChosenRegion {
            region,
            reason,
            choice: chosen & 0x80 != 0,
        });
    }
    resp
}

/// Everything the dispatcher needs to know about a request besides the request itself.
#[derive(Debug, Clone)]
pub struct DispatchContext {
    /// The route the request matched.
    pub route: Arc<RouteEntry>,
    /// The validated token, when the request carried one (shared with the
    /// token cache: no copy per request).
    pub token: Option<Arc<Token>>,
    /// The client's region (empty when unknown).
    pub client_region: String,
}

/// Sends requests to the services' endpoints.
///
/// The seed's request flow, against a real (one-shot) upstream:
///
/// ```
/// # use std::sync::Arc;
/// # use aether_gateway::{Dispatcher, DispatchContext, Router, Route, HttpMethod, ServiceTarget, Token};
/// # use aether_gateway::body::RequestBody;
/// # use aether_gateway::router::{Lookup, RoutePolicy};
/// # use aether_gateway::upstream::{Endpoint, HostPolicy, PoolConfig, Service, UpstreamProtocol};
/// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), aether_gateway::Error> {
/// # let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// # let addr = upstream.local_addr().unwrap();
/// # tokio::spawn(async move {
/// #     let (mut s, _) = upstream.accept().await.unwrap();
/// #     let mut buf = [0u8; 4096];
/// #     let _ = s.read(&mut buf).await;
/// #     let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
/// # });
/// # let mut router = Router::new();
/// # router.add_route(Route {
/// #     method: HttpMethod::Get,
/// #     path: "/api/v1/worlds/{world_id}".into(),
/// #     target: ServiceTarget::WorldService,
/// #     rate_limit: None,
/// # });
/// # let matched_route = match router.lookup(&http::Method::GET, "/api/v1/worlds/7")? {
/// #     Lookup::Route(m) => Arc::clone(m.entry),
/// #     Lookup::Options(_) => unreachable!(),
/// # };
/// # let validated_token: Option<Arc<Token>> = None;
/// # let request = http::Request::builder()
/// #     .uri("/api/v1/worlds/7")
/// #     .header("host", "play.example")
/// #     .body(RequestBody::empty())
/// #     .unwrap();
/// let dispatcher = Dispatcher::new();
/// # let mut dispatcher = dispatcher;
/// # let pool = PoolConfig::for_protocol(UpstreamProtocol::Http1);
/// # dispatcher.add_service(Service::new(
/// #     ServiceTarget::WorldService,
/// #     vec![Arc::new(Endpoint::new(addr, Some("us-east".into()), pool))],
/// #     UpstreamProtocol::Http1,
/// #     HostPolicy::Preserve,
/// # ));
/// let ctx = DispatchContext {
///     route: matched_route,
///     token: validated_token,
///     client_region: "us-east".into(),
/// };
/// let response = dispatcher.dispatch(ctx, request).await?;
/// # assert_eq!(response.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Dispatcher {
    // Looked up per request; keyed by the config's service names.
    services: HashMap<crate::router::ServiceTarget, Arc<Service>, foldhash::fast::RandomState>,
}

impl Dispatcher {
    /// A dispatcher with no services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a shared service (replacing one with the same target): a reload
    /// puts the running config's unchanged services in the new dispatcher.
    pub fn insert_service(&mut self, service: Arc<Service>) {
        self.services.insert(service.target.clone(), service);
    }

    /// Add a service (replacing one with the same target).
    pub fn add_service(&mut self, service: Service) -> Arc<Service> {
        let service = Arc::new(service);
        self.services
            .insert(service.target.clone(), Arc::clone(&service));
        service
    }

    /// Every service, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// The service for a target.
    pub fn service(&self, target: &crate::router::ServiceTarget) -> Option<&Arc<Service>> {
        self.services.get(target)
    }

    /// Send `request` (already in upstream form) to an endpoint of the route's service.
    ///
    /// # Errors
    /// [`Error::NoEndpoint`] when the service has no endpoints,
    /// [`Error::NoHealthyEndpoint`] when none passes its checks and the
    /// service fails fast, [`Error::CircuitOpen`] when every usable endpoint
    /// is at its concurrency cap,
    /// [`Error::UpstreamConnect`] when no endpoint accepted a connection,
    /// [`Error::UpstreamTimeout`] when no response headers arrived within the
    /// route's timeout after the body was sent (or the upstream took none of
    /// the body for that long), [`Error::PayloadTooLarge`] when the body
    /// exceeded its cap while streaming, [`Error::ClientBodyTimeout`] when the
    /// client paused too long in its body, [`Error::UpstreamProtocol`] for any
    /// other failure.
    ///
    /// With geo routing, the client's region is `ctx.client_region` (a
    /// region name of the service's policy; empty or unknown: none) and a
    /// session's sticky region is read from the request as `[geo] sticky`
    /// says.
    pub async fn dispatch(
        &self,
        ctx: DispatchContext,
        request: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, Error> {
        let upgrade = headers::is_websocket_upgrade(request.method(), request.headers());
        self.dispatch_hinted(ctx, request, None, upgrade, &headers::AddedFields::NONE)
            .await
    }

    /// [`Dispatcher::dispatch`] with the client's region and sticky region
    /// already resolved (the pipeline's way: no name lookup, no request
    /// extension to allocate), whether the request is a WebSocket
    /// handshake (`headers::is_websocket_upgrade`) already known, and the
    /// fields the gateway adds to it beside its header map.
    pub(crate) async fn dispatch_hinted(
        &self,
        ctx: DispatchContext,
        request: Request<RequestBody>,
        hints: Option<GeoHints>,
        mut upgrade: bool,
        added: &headers::AddedFields,
    ) -> Result<Response<ResponseBody>, Error> {
        let service = self
            .services
            .get(&ctx.route.route.target)
            .ok_or(Error::NoEndpoint)?;
        let mut request = request;
        if upgrade && service.protocol == UpstreamProtocol::H2c {
            // HTTP/2 upstreams cannot take an HTTP/1.1 upgrade: send it as a
            // plain request and let the service answer it.
            headers::strip_hop_by_hop(request.headers_mut(), false);
            upgrade = false;
        }
        let hash = request_hash(service, &ctx, &request, added);
        // Only our HTTP/1.1 client writes the added fields itself; hyper
        // (HTTP/2 upstreams, WebSocket handshakes) needs them in the map.
        let added = if upgrade || service.protocol != UpstreamProtocol::Http1 {
            added.apply(request.headers_mut());
            &headers::AddedFields::NONE
        } else {
            added
        };
        // The route timeout is the upstream's time to answer; it starts once
        // the client has sent its whole body (as Envoy's does), so a slow
        // client is never blamed on the upstream (pauses in the body are the
        // client body timeout's business: 408). While the body streams, an
        // upstream that stops taking it for a whole route timeout is stuck: 504.
        let timeout = ctx.route.policy.timeout;
        let progress = request.body().progress();
        let hints = match (hints, service.geo_policy()) {
            (Some(h), _) => h,
            (None, Some(geo)) => GeoHints {
                client: geo.id(&ctx.client_region),
                sticky: geo.sticky_region(request.headers()),
            },
            (None, None) => GeoHints::default(),
        };
        // Set just before a timed-out attempt is dropped, so the attempt
        // counts as a failure of its endpoint (declared first: dropped last).
        let timed_out = AtomicBool::new(false);
        // The region and reason of the endpoint in use (see `encode_chosen`).
        let chosen = AtomicU32::new(0);
        let attempt = send_with_retry(
            service, &ctx, request, added, upgrade, hash, hints, &timed_out, &chosen,
        );
        let label = |r: Result<Response<ResponseBody>, Error>| {
            r.map(|resp| label_region(service, resp, chosen.load(Ordering::Relaxed)))
        };
        tokio::pin!(attempt);
        if let Some(progress) = progress {
            let mut check_at = progress.last_pulled() + timeout;
            loop {
                tokio::select! {
                    r = &mut attempt => return label(r),
                    _ = progress.finished() => break,
                    _ = tokio::time::sleep_until(check_at) => {
                        let now = tokio::time::Instant::now();
                        let due = progress.last_pulled() + timeout;
                        if due <= now && !progress.waiting_on_client() {
                            timed_out.store(true, Ordering::Relaxed);
                            return Err(Error::UpstreamTimeout);
                        }
                        // Still moving, or waiting on the client (whose own
                        // timer answers 408): look again later.
                        check_at = if due > now { due } else { now + timeout };
                    }
                }
            }
        }
        tokio::select! {
            r = &mut attempt => label(r),
            () = tokio::time::sleep(timeout) => {
                timed_out.store(true, Ordering::Relaxed);
                Err(Error::UpstreamTimeout)
            }
        }
    }
}

/// The consistent-hash key of a request: computed by the pipeline (it has
/// the path parameters), or here from the token for `hash_key = "user"`.
fn request_hash(
    service: &Service,
    ctx: &DispatchContext,
    req: &Request<RequestBody>,
    added: &headers::AddedFields,
) -> Option<u64> {
    if service.policy().balance != BalancePolicy::ConsistentHash {
        return None;
    }
    if let Some(h) = req.extensions().get::<RequestHash>() {
        return Some(h.0);
    }
    match (&service.policy().hash_key, &ctx.token) {
        (Some(HashKey::User), Some(t)) => Some(stable_hash(t.subject.as_bytes())),
        (Some(HashKey::Header(name)), _) => match req.headers().get(name) {
            Some(v) => Some(stable_hash(v.as_bytes())),
            // A field the gateway sets (`x-real-ip`, `x-request-id`, …).
            None => added.get(name).map(|v| stable_hash(v.as_bytes())),
        },
        _ => None,
    }
}

/// What went wrong with one attempt, and whether another may follow.
enum Failed {
    /// The request never left; here it is again.
    Unsent(Box<Request<RequestBody>>, Error),
    /// It left (or may have): a retry needs the copy.
    Sent(Error),
}

#[allow(clippy::too_many_arguments)]
async fn send_with_retry(
    service: &Service,
    ctx: &DispatchContext,
    mut req: Request<RequestBody>,
    added: &headers::AddedFields,
    upgrade: bool,
    hash: Option<u64>,
    hints: GeoHints,
    timed_out: &AtomicBool,
    chosen: &AtomicU32,
) -> Result<Response<ResponseBody>, Error> {
    let policy = &ctx.route.policy.retry;
    // Only a request without a body can be sent again as it was.
    let replayable = !upgrade
        && policy.retries > 0
        && http_body::Body::is_end_stream(req.body())
        && (retry::is_idempotent(req.method()) || policy.non_idempotent);
    if replayable {
        service.retry_budget.deposit();
    }
    let set = service.endpoints();
    // The head is copied (a header-map clone, the one allocation retries
    // cost) only when a retry after sending could happen at all: another
    // endpoint to go to and budget to spend.
    let copy_wanted = replayable
        && (policy.on.reset || policy.on.gateway_error || policy.on.timeout)
        && set.endpoints.len() > 1;
    let budget_empty = copy_wanted && service.retry_budget.available() == 0;
    let copy_needed = copy_wanted && !budget_empty;
    let mut tried = retry::Tried::default();
    let mut retries_left = policy.retries.min((retry::MAX_ATTEMPTS - 1) as u8);
    let clock = service.clock();
    let mut started = clock.monotonic();
    let mut plan = service.plan(&set, hints, ctx.route.policy.geo, started)?;
    let mut idx = service.pick_planned(&set, plan.as_mut(), hash, tried.as_slice(), started)?;
    loop {
        if let Some(p) = &plan {
            chosen.store(
                encode_chosen(set.region_of(idx), p.reason, set.groups.len() > 1),
                Ordering::Relaxed,
            );
        }
        let endpoint = &set.endpoints[idx];
        let copy = (copy_needed && retries_left > 0).then(|| copy_head(&req));
        address_request(&mut req, service, endpoint)?;
        // One attempt, awaited here rather than in a helper future of its
        // own: every future layer moves the request and the response once
        // more (measured with bench/callgrind.sh).
        let progress = req.body().progress();
        let in_flight = InFlight::begin(endpoint, started);
        let watch = Pending {
            service,
            endpoint,
            timed_out,
            armed: true,
        };
        // The per-try timeout times the upstream, so it applies only when
        // there is no body to stream (a slow upload is the client body
        // timeout's business, and only bodiless requests are retried anyway).
        let sent = match policy.per_try_timeout.filter(|_| progress.is_none()) {
            None => Some(endpoint.pool.send(req, upgrade, added).await),
            Some(t) => tokio::time::timeout(t, endpoint.pool.send(req, upgrade, added))
                .await
                .ok(),
        };
        watch.disarm();
        let outcome = finish_attempt(service, endpoint, sent, progress, in_flight, upgrade);
        tried.push(idx);
        // A retry needs a condition it is allowed for, a copy (or the unsent
        // request), another endpoint, and (unless nothing was sent) budget:
        // checked in that order so a refused retry costs nothing.
        let mut next = |cost: bool| {
            if retries_left == 0 {
                return None;
            }
            let now = clock.monotonic();
            let next = service
                .pick_planned(&set, plan.as_mut(), hash, tried.as_slice(), now)
                .ok()?;
            (!cost || service.retry_budget.withdraw()).then_some((next, now))
        };
        match outcome {
            Ok(resp) => {
                let gateway_error = matches!(
                    resp.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                );
                match copy {
                    Some(c) if gateway_error && policy.on.gateway_error => match next(true) {
                        Some((n, t)) => {
                            tracing::debug!(endpoint = %endpoint.address, status = %resp.status(), "retrying on another endpoint");
                            drop(resp);
                            req = *c;
                            idx = n;
                            started = t;
                        }
                        None => return Ok(resp),
                    },
                    None if gateway_error && policy.on.gateway_error && budget_empty => {
                        service.retry_budget.refuse();
                        return Ok(resp);
                    }
                    _ => return Ok(resp),
                }
            }
            // Never sent: no extra load on any upstream, so no budget.
            Err(Failed::Unsent(r, e)) => {
                match policy.on.connect_failure.then(|| next(false)).flatten() {
                    Some((n, t)) => {
                        req = *r;
                        idx = n;
                        started = t;
                    }
                    None => return Err(e),
                }
            }
            Err(Failed::Sent(e)) => {
                let allowed = match e {
                    Error::UpstreamTimeout => policy.on.timeout,
                    Error::UpstreamProtocol => policy.on.reset,
                    _ => false,
                };
                match copy {
                    Some(c) if allowed => match next(true) {
                        Some((n, t)) => {
                            req = *c;
                            idx = n;
                            started = t;
                        }
                        None => return Err(e),
                    },
                    None if allowed && budget_empty => {
                        service.retry_budget.refuse();
                        return Err(e);
                    }
                    _ => return Err(e),
                }
            }
        }
        retries_left -= 1;
    }
}

/// The outcome of one attempt (`sent` is `None` when the per-try timeout
/// passed), counted for passive health and the latency estimate.
fn finish_attempt(
    service: &Service,
    endpoint: &Arc<Endpoint>,
    sent: Option<Result<crate::upstream::pool::Sent, SendError>>,
    progress: Option<Arc<crate::body::BodyProgress>>,
    in_flight: InFlight,
    upgrade: bool,
) -> Result<Response<ResponseBody>, Failed> {
    let Some(sent) = sent else {
        service.record_outcome(endpoint, false);
        return Err(Failed::Sent(Error::UpstreamTimeout));
    };
    match sent {
        Ok(resp) => {
            // An upload's time is the client's: only bodiless requests
            // measure the endpoint's latency.
            if progress.is_none() {
                in_flight.answered(service.clock().monotonic());
            }
            service.record_outcome(endpoint, !resp.status().is_server_error());
            finish_response(resp, upgrade, in_flight).map_err(Failed::Sent)
        }
        // A connect failure means the request never left: any method may go
        // to another endpoint (as nginx and Envoy do).
        Err(SendError::Connect { request, error }) => {
            tracing::warn!(endpoint = %endpoint.address, service = %service.target, %error, "upstream connect failed");
            service.record_outcome(endpoint, false);
            Err(Failed::Unsent(request, Error::UpstreamConnect))
        }
        Err(SendError::Request(e)) => {
            // The client broke its own body: hyper's h1 client passes our
            // BodyError up, its h2 client only resets the stream, so ask the
            // body itself.
            if let Some(client) = progress.as_ref().and_then(|p| p.client_failure()) {
                return Err(Failed::Sent(client));
            }
            let err = classify(&e, endpoint);
            // The client's own failures say nothing about the endpoint.
            if err.blame() == crate::error::Blame::Upstream {
                service.record_outcome(endpoint, false);
            }
            Err(Failed::Sent(err))
        }
    }
}

/// Counts an attempt dropped by the route timeout as its endpoint's failure.
struct Pending<'a> {
    service: &'a Service,
    endpoint: &'a Endpoint,
    timed_out: &'a AtomicBool,
    armed: bool,
}

impl Pending<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed && self.timed_out.load(Ordering::Relaxed) {
            self.service.record_outcome(self.endpoint, false);
        }
    }
}

/// The head of a body-less request, for a retry.
///
/// Boxed: the copy lives in the retry loop's state across the attempt, and
/// an unboxed request there would grow (and memcpy) every request's future.
fn copy_head(req: &Request<RequestBody>) -> Box<Request<RequestBody>> {
    let mut copy = Box::new(Request::new(RequestBody::empty()));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Set version, URI form and `Host`/`:authority` for this endpoint.
fn address_request(
    req: &mut Request<RequestBody>,
    service: &Service,
    endpoint: &Endpoint,
) -> Result<(), Error> {
    match service.protocol {
        UpstreamProtocol::Http1 => {
            *req.version_mut() = Version::HTTP_11;
            let value = match &service.host {
                // The client's Host stays where it is.
                HostPolicy::Preserve if req.headers().contains_key(header::HOST) => return Ok(()),
                HostPolicy::Preserve | HostPolicy::Endpoint => endpoint.host_value.clone(),
                HostPolicy::Fixed(v) => v.clone(),
            };
            req.headers_mut().insert(header::HOST, value);
        }
        UpstreamProtocol::H2c => {
            *req.version_mut() = Version::HTTP_2;
            let host = match &service.host {
                HostPolicy::Preserve => req.headers().get(header::HOST),
                HostPolicy::Endpoint => Some(&endpoint.host_value),
                HostPolicy::Fixed(v) => Some(v),
            };
            let authority = match host {
                Some(h) => http::uri::Authority::try_from(h.as_bytes())
                    .map_err(|_| Error::BadRequest("invalid Host header"))?,
                None => endpoint.authority.clone(),
            };
            let mut parts = req.uri().clone().into_parts();
            parts.scheme = Some(if endpoint.pool.config().tls.is_some() {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            });
            parts.authority = Some(authority);
            if parts.path_and_query.is_none() {
                parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            *req.uri_mut() =
                http::Uri::from_parts(parts).map_err(|_| Error::Internal("building an h2 URI"))?;
            req.headers_mut().remove(header::HOST);
        }
    }
    Ok(())
}

fn finish_response(
    resp: Response<UpstreamBody>,
    upgrade: bool,
    in_flight: InFlight,
) -> Result<Response<ResponseBody>, Error> {
    let (mut parts, body) = resp.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    if switching && !upgrade {
        // An upstream may not switch protocols unasked; the connection is unusable.
        return Err(Error::UpstreamProtocol);
    }
    // Our HTTP/1.1 client leaves them out as it builds the map, when it can.
    let clean = matches!(&body, UpstreamBody::H1(b) if b.hop_by_hop_removed());
    if !clean {
        headers::strip_hop_by_hop(&mut parts.headers, switching);
    }
    // hyper writes HTTP/1.0 or 1.1 for h1 clients as they spoke, and ignores it for h2.
    parts.version = Version::HTTP_11;
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, in_flight),
    ))
}

fn classify(e: &UpstreamError, endpoint: &Endpoint) -> Error {
    let client = |b: &BodyError| match b {
        BodyError::TooLarge { .. } => Error::PayloadTooLarge,
        BodyError::Client(_) => Error::ClientAborted,
        BodyError::TimedOut => Error::ClientBodyTimeout,
    };
    match e {
        UpstreamError::Body(b) => return client(b),
        UpstreamError::Hyper(h) => {
            // hyper's h1 client passes our BodyError up as a source.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(h);
            while let Some(s) = source {
                if let Some(b) = s.downcast_ref::<BodyError>() {
                    return client(b);
                }
                source = s.source();
            }
        }
        UpstreamError::Io(_) | UpstreamError::Framing(_) | UpstreamError::RequestFraming => {}
    }
    tracing::warn!(endpoint = %endpoint.address, error = %e, "upstream exchange failed");
    match e {
        UpstreamError::Hyper(h) if h.is_timeout() => Error::UpstreamTimeout,
        _ => Error::UpstreamProtocol,
    }
}
