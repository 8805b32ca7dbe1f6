//! Body types of the proxy: concrete enums rather than boxed trait objects,
//! so streaming a request or response through costs no allocation per body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::upstream::h1;
use crate::upstream::pool::{UpstreamBody, UpstreamError};

/// Why a request body could not be streamed to the upstream.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent more than the route allows.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The cap that was exceeded.
        limit: u64,
    },
    /// Reading from the client failed (it went away or broke framing).
    #[error("reading the request body failed: {0}")]
    Client(#[from] hyper::Error),
    /// The client paused longer than the body timeout between two pieces.
    #[error("the client stopped sending its body")]
    TimedOut,
}

/// The one frame of an in-memory body (none for an empty one).
fn full_frame<E>(b: &mut Option<Bytes>) -> Option<Result<Frame<Bytes>, E>> {
    b.take()
        .filter(|b| !b.is_empty())
        .map(|b| Ok(Frame::data(b)))
}

fn full_is_end(b: &Option<Bytes>) -> bool {
    b.as_ref().is_none_or(Bytes::is_empty)
}

fn full_size_hint(b: &Option<Bytes>) -> SizeHint {
    SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
}

enum RequestKind {
    Incoming(Incoming),
    Full(Option<Bytes>),
}

/// How far a streaming request body has got; shared with the dispatcher so
/// it can tell a stuck upstream (not pulling) from a slow client (not sending).
#[derive(Debug)]
pub struct BodyProgress {
    base: tokio::time::Instant,
    /// Milliseconds after `base` when the upstream last took a piece.
    pulled_ms: AtomicU64,
    /// The upstream asked for more and the client had nothing yet.
    waiting_on_client: AtomicBool,
    done: AtomicBool,
    finished: Notify,
    /// Why the body failed on the client's side (0: it did not), so the
    /// dispatcher can blame the client even when the upstream protocol
    /// (hyper's h2 client) reports only a reset stream.
    client_failure: std::sync::atomic::AtomicU8,
    /// Body bytes received from the client (the access log's `bytes_in`).
    received: AtomicU64,
}

impl BodyProgress {
    fn new() -> Self {
        BodyProgress {
            base: tokio::time::Instant::now(),
            pulled_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            done: AtomicBool::new(false),
            finished: Notify::new(),
            client_failure: std::sync::atomic::AtomicU8::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// The client's failure, if the body failed because of the client.
    pub fn client_failure(&self) -> Option<crate::error::Error> {
        use crate::error::Error;
        match self.client_failure.load(Ordering::Acquire) {
            1 => Some(Error::PayloadTooLarge),
            2 => Some(Error::ClientAborted),
            3 => Some(Error::ClientBodyTimeout),
            _ => None,
        }
    }

    fn failed(&self, e: &BodyError) {
        let code = match e {
            BodyError::TooLarge { .. } => 1,
            BodyError::Client(_) => 2,
            BodyError::TimedOut => 3,
        };
        self.client_failure.store(code, Ordering::Release);
    }

    /// Body bytes received from the client so far.
    pub fn received_bytes(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// When the upstream last took a piece of the body (or the body began).
    pub fn last_pulled(&self) -> tokio::time::Instant {
        self.base + Duration::from_millis(self.pulled_ms.load(Ordering::Relaxed))
    }

    /// True while the upstream waits for the client to send more.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }

    /// Resolves once the body has been read to its end or has failed.
    pub async fn finished(&self) {
        loop {
            let notified = self.finished.notified();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn pulled(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.pulled_ms.store(ms, Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.done.store(true, Ordering::Release);
        self.finished.notify_waiters();
    }
}

/// What a streaming body with data still to come needs; absent for bodiless
/// requests, so they cost no timer and no shared state.
struct Streaming {
    /// Longest pause between two pieces of the body.
    gap: Duration,
    /// Started when the upstream first finds nothing to read, so time spent
    /// connecting upstream never counts against the client.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    progress: Arc<BodyProgress>,
}

/// The body of a request on its way upstream: the client's stream, capped, or bytes.
pub struct RequestBody {
    kind: RequestKind,
    limit: u64,
    seen: u64,
    streaming: Option<Box<Streaming>>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("limit", &self.limit)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl RequestBody {
    /// Stream the client's body, failing with [`BodyError::TooLarge`] past
    /// `limit` bytes and with [`BodyError::TimedOut`] when the client pauses
    /// longer than `gap` between two pieces.
    pub fn streaming(body: Incoming, limit: u64, gap: Duration) -> Self {
        let streaming = (!body.is_end_stream()).then(|| {
            Box::new(Streaming {
                gap,
                timer: None,
                progress: Arc::new(BodyProgress::new()),
            })
        });
        RequestBody {
            kind: RequestKind::Incoming(body),
            limit,
            seen: 0,
            streaming,
        }
    }

    /// Progress of a streaming body; `None` when there is no body to wait for.
    pub fn progress(&self) -> Option<Arc<BodyProgress>> {
        self.streaming.as_ref().map(|s| Arc::clone(&s.progress))
    }

    fn finish(&mut self) {
        if let Some(s) = &self.streaming {
            s.progress.finish();
        }
    }

    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(s) = &self.streaming {
            s.progress.failed(&e);
        }
        self.finish();
        Poll::Ready(Some(Err(e)))
    }

    /// A body made of bytes already in memory.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        RequestBody {
            kind: RequestKind::Full(Some(bytes.into())),
            limit: u64::MAX,
            seen: 0,
            streaming: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        RequestBody {
            kind: RequestKind::Full(None),
            limit: u64::MAX,
            seen: 0,
            streaming: None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            RequestKind::Full(b) => Poll::Ready(full_frame(b)),
            RequestKind::Incoming(inc) => {
                let polled = Pin::new(inc).poll_frame(cx);
                let result = match polled {
                    Poll::Pending => {
                        // Nothing from the client: is the pause too long?
                        if let Some(s) = this.streaming.as_mut() {
                            s.progress.waiting_on_client.store(true, Ordering::Relaxed);
                            let gap = s.gap;
                            let timer = s
                                .timer
                                .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
                            if timer.as_mut().poll(cx).is_ready() {
                                return this.fail(BodyError::TimedOut);
                            }
                        }
                        return Poll::Pending;
                    }
                    // Request trailers are dropped, never forwarded: they
                    // would carry past the head's hygiene (identity, forwarding
                    // and override headers) to upstreams that merge trailers
                    // into headers. Trailers are the last frame: the body ends.
                    Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => None,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            this.seen += data.len() as u64;
                            if this.seen > this.limit {
                                let limit = this.limit;
                                return this.fail(BodyError::TooLarge { limit });
                            }
                        }
                        if let Some(s) = this.streaming.as_mut() {
                            if let Some(data) = frame.data_ref() {
                                s.progress
                                    .received
                                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                            }
                            s.progress.pulled();
                            if let Some(timer) = s.timer.as_mut() {
                                timer.as_mut().reset(tokio::time::Instant::now() + s.gap);
                            }
                        }
                        Some(Ok(frame))
                    }
                    Poll::Ready(Some(Err(e))) => return this.fail(BodyError::Client(e)),
                    Poll::Ready(None) => None,
                };
                if !matches!(result, Some(Ok(_))) {
                    this.finish();
                }
                Poll::Ready(result)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RequestKind::Full(b) => full_is_end(b),
            RequestKind::Incoming(i) => i.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RequestKind::Full(b) => full_size_hint(b),
            RequestKind::Incoming(i) => i.size_hint(),
        }
    }
}

enum ResponseKind {
    /// hyper's client (h2c, a WebSocket handshake's answer).
    Hyper {
        body: Incoming,
        /// Counts the request in flight at its endpoint until the body is
        /// gone (or, for a WebSocket, until the tunnel closes).
        in_flight: Option<crate::upstream::InFlight>,
    },
    /// Our HTTP/1.1 client: the body reads the upstream connection itself
    /// and hands it back to its pool at the end.
    H1 {
        body: h1::ResponseBody,
        in_flight: Option<crate::upstream::InFlight>,
    },
    Full(Option<Bytes>),
}

/// The body of a response on its way to the client.
pub struct ResponseBody {
    kind: ResponseKind,
}

impl ResponseBody {
    /// A gateway-made body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody {
            kind: ResponseKind::Full(Some(bytes.into())),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody {
            kind: ResponseKind::Full(None),
        }
    }

    /// Stream an upstream body.
    pub(crate) fn upstream(body: UpstreamBody, in_flight: crate::upstream::InFlight) -> Self {
        let in_flight = Some(in_flight);
        let kind = match body {
            UpstreamBody::Hyper(body) => ResponseKind::Hyper { body, in_flight },
            UpstreamBody::H1(body) => ResponseKind::H1 { body, in_flight },
        };
        ResponseBody { kind }
    }

    /// The endpoint an upstream response came from.
    pub(crate) fn endpoint(&self) -> Option<std::net::SocketAddr> {
        match &self.kind {
            ResponseKind::Hyper { in_flight, .. } | ResponseKind::H1 { in_flight, .. } => {
                in_flight.as_ref().map(|f| f.endpoint_address())
            }
            ResponseKind::Full(_) => None,
        }
    }

    /// The in-flight guard of an upstream response, for a tunnel that
    /// outlives the (empty) body of its `101`.
    pub(crate) fn take_in_flight(&mut self) -> Option<crate::upstream::InFlight> {
        match &mut self.kind {
            ResponseKind::Hyper { in_flight, .. } | ResponseKind::H1 { in_flight, .. } => {
                in_flight.take()
            }
            ResponseKind::Full(_) => None,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            ResponseKind::Full(b) => Poll::Ready(full_frame(b)),
            ResponseKind::H1 { body, .. } => Pin::new(body).poll_frame(cx),
            ResponseKind::Hyper { body, .. } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                Poll::Ready(frame.map(|f| f.map_err(UpstreamError::Hyper)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Full(b) => full_is_end(b),
            ResponseKind::Hyper { body, .. } => body.is_end_stream(),
            ResponseKind::H1 { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Full(b) => full_size_hint(b),
            ResponseKind::Hyper { body, .. } => body.size_hint(),
            ResponseKind::H1 { body, .. } => body.size_hint(),
        }
    }
}
