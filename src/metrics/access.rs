//! The access log: one line per request, written when its response is
//! finished (body sent or dropped) so bytes and durations are known.
//!
//! Lines go through `tracing` at target `access` (`RUST_LOG=access=off`
//! silences them; `[log] access_log = false` builds none at all). The path
//! is logged without its query string and the token never: only its `sub`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Uri};

use super::traceparent::TraceParent;
use crate::auth::Token;
use crate::body::BodyProgress;
use crate::router::RouteEntry;

/// The longest path an access line (or a span) carries, in bytes.
/// Longer ones are cut (and `path_bytes` says how long they were), so a
/// line's size is bounded whatever the client sends: the log writer's
/// queue is bounded in lines, and lines must be small for its memory to be.
pub const MAX_LOGGED_PATH: usize = 512;
/// The longest user (`sub`) an access line carries, in bytes.
pub const MAX_LOGGED_USER: usize = 128;
/// The longest method a log line carries, in bytes: the standard ones are
/// at most 7; an extension method may fill a whole request head.
pub const MAX_LOGGED_METHOD: usize = 32;

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether a request's line will be written: `[log] access_log` is on and
/// the `access` target is not filtered out (`RUST_LOG=access=off`), so a
/// line nobody reads is not even assembled.
pub(crate) fn enabled(snapshot: &crate::config::Snapshot) -> bool {
    snapshot.access_log && tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// What the pipeline learnt about one request on its way through.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    /// The matched route (`None`: 404/405, or refused before routing).
    pub route: Option<Arc<RouteEntry>>,
    /// The verified token, when the request carried one.
    pub user: Option<Arc<Token>>,
    /// Time from handing the request to the dispatcher to its response
    /// headers (or failure), retries included.
    pub upstream: Option<Duration>,
    /// The trace the request is part of.
    pub trace: Option<TraceParent>,
    /// The client's span id, when it sent a valid `traceparent`.
    pub incoming_parent: Option<[u8; 8]>,
    /// The client body's progress, for its byte count (access log only).
    pub body: Option<Arc<BodyProgress>>,
    /// The endpoint of a `101` whose tunnel took the response's in-flight
    /// guard (which otherwise names it).
    pub endpoint: Option<SocketAddr>,
}

/// The access log's second line for a WebSocket: written when its tunnel
/// closes, with how long it was open and what it carried.
#[derive(Debug)]
pub(crate) struct TunnelLine {
    started: quanta::Instant,
    request_id: HeaderValue,
    route: Arc<str>,
    endpoint: Option<SocketAddr>,
    /// Who opened it: the request id is the client's choice, these are not.
    client_ip: IpAddr,
    user: Option<Arc<Token>>,
    trace: Option<TraceParent>,
}

impl TunnelLine {
    /// The line of the tunnel a request's `101` opens, from what the
    /// pipeline learnt about the request.
    pub(crate) fn new(
        request_id: HeaderValue,
        route: Arc<str>,
        client_ip: IpAddr,
        exchange: &Exchange,
    ) -> Self {
        TunnelLine {
            started: quanta::Instant::now(),
            request_id,
            route,
            endpoint: exchange.endpoint,
            client_ip,
            user: exchange.user.clone(),
            trace: exchange.trace,
        }
    }

    /// Write the line: `how` the tunnel ended (`closed`, `idle`, `error`,
    /// `shutdown`).
    pub(crate) fn write(self, carried: &crate::dispatch::tunnel::Carried, how: &'static str) {
        use std::sync::atomic::Ordering::Relaxed;
        let trace = self.trace.map(|t| t.trace_id_hex());
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or_default(),
            trace_id = trace.as_ref().and_then(|t| std::str::from_utf8(t).ok()),
            route = &*self.route,
            upstream = self.endpoint.map(tracing::field::display),
            tunnel_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            bytes_up = carried.up.load(Relaxed),
            bytes_down = carried.down.load(Relaxed),
            ended = how,
            client_ip = %self.client_ip,
            user = self.user.as_ref().map(|t| clip(&t.subject, MAX_LOGGED_USER)),
            "tunnel closed"
        );
    }
}

/// One access-log line being assembled; written on drop.
#[derive(Debug)]
pub(crate) struct AccessLine {
    pub started: quanta::Instant,
    pub method: Method,
    /// A cheap clone (shared bytes) of the request target.
    pub uri: Uri,
    pub client_ip: IpAddr,
    pub request_id: HeaderValue,
    pub status: u16,
    pub region: Option<HeaderValue>,
    pub endpoint: Option<SocketAddr>,
    pub exchange: Exchange,
    /// Response body bytes handed to the client so far.
    pub bytes_out: u64,
    /// Write the log line (`[log] access_log`).
    pub log: bool,
    /// Export the request's span.
    #[cfg(feature = "otel")]
    pub export: Option<Arc<super::otel::SpanExport>>,
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(export) = &self.export {
            export.record(self);
        }
        if !self.log {
            return;
        }
        let x = &self.exchange;
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let route = x.route.as_ref().map(|r| &*r.policy.name);
        let service = x.route.as_ref().map(|r| r.route.target.name());
        let user = x.user.as_ref().map(|t| clip(&t.subject, MAX_LOGGED_USER));
        let full_path = self.uri.path();
        let path = clip(full_path, MAX_LOGGED_PATH);
        let path_bytes = (path.len() < full_path.len()).then_some(full_path.len());
        let trace = x.trace.map(|t| t.trace_id_hex());
        let trace_id = trace.as_ref().and_then(|t| std::str::from_utf8(t).ok());
        let bytes_in = x.body.as_ref().map_or(0, |b| b.received_bytes());
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or_default(),
            trace_id,
            method = clip(self.method.as_str(), MAX_LOGGED_METHOD),
            path,
            path_bytes,
            route = route.unwrap_or(super::NO_ROUTE),
            service,
            upstream = self.endpoint.map(tracing::field::display),
            region = self
                .region
                .as_ref()
                .and_then(|r| r.to_str().ok())
                .map(|r| r.split(';').next().unwrap_or(r).trim()),
            status = self.status,
            bytes_in,
            bytes_out = self.bytes_out,
            duration_ms = ms(self.started.elapsed()),
            upstream_ms = x.upstream.map(ms),
            client_ip = %self.client_ip,
            user,
            "request"
        );
    }
}
