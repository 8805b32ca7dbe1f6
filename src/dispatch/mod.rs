//! Dispatch: send a routed request to one of its service's endpoints.
//!
//! [`pipeline`] turns a client request into an upstream request (path
//! rewrite, header hygiene, forwarding headers); the [`Dispatcher`] then picks
//! an endpoint, sends over a pooled connection with the route's timeout and
//! retries a connect failure once on another endpoint.

pub mod forwarded;
pub mod headers;
pub(crate) mod pipeline;
pub mod tunnel;

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, Version, header};

use crate::auth::Token;
use crate::body::{BodyError, RequestBody, ResponseBody};
use crate::error::Error;
use crate::router::RouteEntry;
use crate::upstream::pool::{ReturnToPool, SendError};
use crate::upstream::{Endpoint, HostPolicy, Service, UpstreamProtocol};

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
#[derive(Debug, Default)]
pub struct Dispatcher {
    services: HashMap<crate::router::ServiceTarget, Arc<Service>>,
}

impl Dispatcher {
    /// A dispatcher with no services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a service (replacing one with the same target).
    pub fn add_service(&mut self, service: Service) -> Arc<Service> {
        let service = Arc::new(service);
        self.services
            .insert(service.target.clone(), Arc::clone(&service));
        service
    }

    /// The service for a target.
    pub fn service(&self, target: &crate::router::ServiceTarget) -> Option<&Arc<Service>> {
        self.services.get(target)
    }

    /// Send `request` (already in upstream form) to an endpoint of the route's service.
    ///
    /// # Errors
    /// [`Error::NoEndpoint`] when the service has no endpoints,
    /// [`Error::UpstreamConnect`] when no endpoint accepted a connection,
    /// [`Error::UpstreamTimeout`] when no response headers arrived within the
    /// route's timeout after the body was sent (or the upstream took none of
    /// the body for that long), [`Error::PayloadTooLarge`] when the body
    /// exceeded its cap while streaming, [`Error::ClientBodyTimeout`] when the
    /// client paused too long in its body, [`Error::UpstreamProtocol`] for any
    /// other failure.
    pub async fn dispatch(
        &self,
        ctx: DispatchContext,
        request: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, Error> {
        let service = self
            .services
            .get(&ctx.route.route.target)
            .ok_or(Error::NoEndpoint)?;
        let mut request = request;
        let mut upgrade = headers::is_websocket_upgrade(request.method(), request.headers());
        if upgrade && service.protocol == UpstreamProtocol::H2c {
            // HTTP/2 upstreams cannot take an HTTP/1.1 upgrade: send it as a
            // plain request and let the service answer it.
            headers::strip_hop_by_hop(request.headers_mut(), false);
            upgrade = false;
        }
        // The route timeout is the upstream's time to answer; it starts once
        // the client has sent its whole body (as Envoy's does), so a slow
        // client is never blamed on the upstream (pauses in the body are the
        // client body timeout's business: 408). While the body streams, an
        // upstream that stops taking it for a whole route timeout is stuck: 504.
        let timeout = ctx.route.policy.timeout;
        let progress = request.body().progress();
        let attempt = send_with_retry(service, request, upgrade);
        tokio::pin!(attempt);
        if let Some(progress) = progress {
            let mut check_at = progress.last_pulled() + timeout;
            loop {
                tokio::select! {
                    r = &mut attempt => return r,
                    _ = progress.finished() => break,
                    _ = tokio::time::sleep_until(check_at) => {
                        let now = tokio::time::Instant::now();
                        let due = progress.last_pulled() + timeout;
                        if due <= now && !progress.waiting_on_client() {
                            return Err(Error::UpstreamTimeout);
                        }
                        // Still moving, or waiting on the client (whose own
                        // timer answers 408): look again later.
                        check_at = if due > now { due } else { now + timeout };
                    }
                }
            }
        }
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::UpstreamTimeout),
        }
    }
}

async fn send_with_retry(
    service: &Service,
    mut req: Request<RequestBody>,
    upgrade: bool,
) -> Result<Response<ResponseBody>, Error> {
    let mut failed: Option<usize> = None;
    loop {
        let Some((idx, endpoint)) = service.pick(failed) else {
            return Err(if failed.is_some() {
                Error::UpstreamConnect
            } else {
                Error::NoEndpoint
            });
        };
        address_request(&mut req, service, endpoint)?;
        match endpoint.pool.send(req).await {
            Ok((resp, conn)) => return finish_response(resp, conn, upgrade),
            // A connect failure means the request never left: any method may go
            // to another endpoint (as nginx and Envoy do), but only once.
            Err(SendError::Connect { request, error }) => {
                tracing::warn!(endpoint = %endpoint.address, service = %service.target, %error, "upstream connect failed");
                if failed.is_some() {
                    return Err(Error::UpstreamConnect);
                }
                failed = Some(idx);
                req = *request;
            }
            Err(SendError::Request(e)) => return Err(classify(&e, endpoint)),
        }
    }
}

/// Set version, URI form and `Host`/`:authority` for this endpoint.
fn address_request(
    req: &mut Request<RequestBody>,
    service: &Service,
    endpoint: &Endpoint,
) -> Result<(), Error> {
    let host: Option<HeaderValue> = match &service.host {
        HostPolicy::Preserve => req.headers().get(header::HOST).cloned(),
        HostPolicy::Endpoint => Some(endpoint.host_value.clone()),
        HostPolicy::Fixed(v) => Some(v.clone()),
    };
    match service.protocol {
        UpstreamProtocol::Http1 => {
            *req.version_mut() = Version::HTTP_11;
            let value = host.unwrap_or_else(|| endpoint.host_value.clone());
            req.headers_mut().insert(header::HOST, value);
        }
        UpstreamProtocol::H2c => {
            *req.version_mut() = Version::HTTP_2;
            let authority = match host {
                Some(h) => http::uri::Authority::try_from(h.as_bytes())
                    .map_err(|_| Error::BadRequest("invalid Host header"))?,
                None => endpoint.authority.clone(),
            };
            let mut parts = req.uri().clone().into_parts();
            parts.scheme = Some(http::uri::Scheme::HTTP);
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
    resp: Response<hyper::body::Incoming>,
    conn: Option<ReturnToPool>,
    upgrade: bool,
) -> Result<Response<ResponseBody>, Error> {
    let (mut parts, body) = resp.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    if switching && !upgrade {
        // An upstream may not switch protocols unasked; the connection is unusable.
        return Err(Error::UpstreamProtocol);
    }
    headers::strip_hop_by_hop(&mut parts.headers, switching);
    // hyper writes HTTP/1.0 or 1.1 for h1 clients as they spoke, and ignores it for h2.
    parts.version = Version::HTTP_11;
    // A switched connection belongs to the tunnel now, never to the pool.
    let conn = if switching { None } else { conn };
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, conn),
    ))
}

fn classify(e: &hyper::Error, endpoint: &Endpoint) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge { .. } => Error::PayloadTooLarge,
                BodyError::Client(_) => Error::ClientAborted,
                BodyError::TimedOut => Error::ClientBodyTimeout,
            };
        }
        source = s.source();
    }
    tracing::warn!(endpoint = %endpoint.address, error = %e, "upstream exchange failed");
    if e.is_timeout() {
        Error::UpstreamTimeout
    } else {
        Error::UpstreamProtocol
    }
}
