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
        let user = x.user.as_ref().map(|t| t.subject.as_str());
        let trace = x.trace.map(|t| t.trace_id_hex());
        let trace_id = trace.as_ref().and_then(|t| std::str::from_utf8(t).ok());
        let bytes_in = x.body.as_ref().map_or(0, |b| b.received_bytes());
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or_default(),
            trace_id,
            method = self.method.as_str(),
            path = self.uri.path(),
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
