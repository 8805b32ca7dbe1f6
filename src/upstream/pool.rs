//! Per-endpoint connection pool: idle HTTP/1.1 connections (spoken by our
//! own client, `h1.rs`, in the request's task) and one h2c connection
//! (hyper's).
//!
//! We hold the connections ourselves (rather than hyper-util's legacy client)
//! so that a connect failure hands the request back untouched — it was
//! provably never sent and can go to another endpoint — and so that later
//! health and circuit-breaking work sees every connection of an endpoint.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::h1;
use crate::body::{BodyError, RequestBody};
use crate::dispatch::headers::AddedFields;
use crate::tls::upstream::UpstreamStream;

/// The HTTP version spoken to an upstream service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive; the only one that can carry WebSocket upgrades.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge; one multiplexed connection.
    H2c,
}

/// Pool limits.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Protocol spoken to the endpoint.
    pub protocol: UpstreamProtocol,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per endpoint.
    pub max_idle: usize,
    /// Idle connections older than this are closed instead of reused.
    pub idle_timeout: Duration,
    /// TLS to the endpoint (`[services.tls]`); `None`: cleartext.
    pub tls: Option<Arc<crate::tls::upstream::UpstreamTls>>,
}

impl PoolConfig {
    /// The defaults of `[[services]]` for `protocol`.
    pub fn for_protocol(protocol: UpstreamProtocol) -> Self {
        PoolConfig {
            protocol,
            connect_timeout: Duration::from_secs(2),
            max_idle: 64,
            idle_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// The body of an upstream response: hyper's (h2c, WebSocket upgrades) or
/// read by our HTTP/1.1 client straight from the connection.
pub enum UpstreamBody {
    /// hyper's client connection.
    Hyper(Incoming),
    /// Our HTTP/1.1 client; the connection returns to the pool at the end.
    H1(h1::ResponseBody),
}

/// What [`Pool::send`] gives back: the response head and its streaming body.
pub type Sent = Response<UpstreamBody>;

/// An exchange with an upstream that failed after the request was handed
/// to a connection.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// hyper's client (h2c, upgrades).
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The connection failed.
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The response's framing is refused.
    #[error(transparent)]
    Framing(#[from] h1::FramingError),
    /// The client's body failed while it streamed upstream.
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The request's own framing is inconsistent (its body and its
    /// `Content-Length` disagree).
    #[error("request body does not match its Content-Length")]
    RequestFraming,
}

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made; the request was not sent and is handed back.
    Connect {
        /// The untouched request.
        request: Box<Request<RequestBody>>,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The request was (at least partly) sent and then failed.
    Request(UpstreamError),
}

struct Idle {
    conn: Box<h1::Conn>,
    /// quanta: a TSC read, where `Instant` is a clock_gettime call; both
    /// ends of every pooled request read it.
    since: quanta::Instant,
}

/// Connections to one endpoint.
pub struct Pool {
    addr: SocketAddr,
    config: PoolConfig,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// HTTP/1.1 requests sent on a new connection and on a pooled one
    /// (read by `/metrics`).
    h1_new: AtomicU64,
    h1_reused: AtomicU64,
    /// The endpoint runs on this host (a loopback address), so it shares
    /// the gateway's CPUs: requests to it are written in bursts (see
    /// `h1::exchange`).
    same_host: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Bounds the connection attempts of one request for an upstream that
/// accepts and closes at once.
const MAX_UNSENT_ATTEMPTS: u32 = 3;

impl Pool {
    /// An empty pool for `addr`.
    pub fn new(addr: SocketAddr, config: PoolConfig) -> Arc<Self> {
        Arc::new(Pool {
            addr,
            config,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h1_new: AtomicU64::new(0),
            h1_reused: AtomicU64::new(0),
            same_host: addr.ip().is_loopback(),
        })
    }

    /// Whether requests to this endpoint wait for the scheduler's other
    /// ready work before they are written (an endpoint on this host).
    pub(crate) fn batches_writes(&self) -> bool {
        self.same_host
    }

    /// Its limits.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// HTTP/1.1 requests sent on a new connection, and on a pooled one.
    pub fn h1_connections(&self) -> (u64, u64) {
        (
            self.h1_new.load(Ordering::Relaxed),
            self.h1_reused.load(Ordering::Relaxed),
        )
    }

    /// Idle HTTP/1.1 connections currently held.
    pub fn idle_count(&self) -> usize {
        // Connections the upstream closed (or wrote to unasked) are dropped
        // here and on the next take; they are not counted as usable.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|c| c.conn.is_usable());
        idle.len()
    }

    /// A connection whose response ended cleanly, for the next request.
    pub(crate) fn put_h1(&self, conn: Box<h1::Conn>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.config.max_idle {
            idle.push(Idle {
                conn,
                since: quanta::Instant::now(),
            });
        }
    }

    fn take_idle(&self) -> Option<Box<h1::Conn>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.since.elapsed() < self.config.idle_timeout && c.conn.is_usable() {
                return Some(c.conn);
            }
        }
        None
    }

    /// A new connection: TCP, then TLS when the service has it (each step
    /// under `connect_timeout`). A failed handshake is a connect failure:
    /// nothing of the request was sent.
    async fn connect(&self) -> std::io::Result<UpstreamStream> {
        let stream =
            tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(self.addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
        stream.set_nodelay(true)?;
        match &self.config.tls {
            None => Ok(UpstreamStream::Plain(stream)),
            Some(tls) => {
                tokio::time::timeout(self.config.connect_timeout, tls.connect(stream, self.addr))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })?
                    .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake: {e}")))
            }
        }
    }

    async fn hyper_h1(
        &self,
        stream: UpstreamStream,
    ) -> std::io::Result<http1::SendRequest<RequestBody>> {
        let (tx, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }

    async fn h2_sender(&self) -> std::io::Result<http2::SendRequest<RequestBody>> {
        if let Some(tx) = self.h2.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
        let io = TokioIo::new(self.connect().await?);
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended with an error");
            }
        });
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
        Ok(tx)
    }

    /// Send a request on a pooled or new connection.
    ///
    /// `upgrade`: a WebSocket handshake, sent through hyper so that the
    /// connection can become a tunnel. HTTP/1.1 connections return to the
    /// pool when the response body has been read to a certain end.
    ///
    /// # Errors
    /// [`SendError::Connect`] with the untouched request when no connection
    /// could be made; [`SendError::Request`] when the exchange failed after the
    /// request was handed to a connection.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        upgrade: bool,
        added: &AddedFields,
    ) -> Result<Sent, SendError> {
        match self.config.protocol {
            UpstreamProtocol::H2c => {
                let mut tx = match Box::pin(self.h2_sender()).await {
                    Ok(tx) => tx,
                    Err(error) => {
                        return Err(SendError::Connect {
                            request: Box::new(req),
                            error,
                        });
                    }
                };
                let resp = tx
                    .send_request(req)
                    .await
                    .map_err(|e| SendError::Request(e.into()))?;
                Ok(resp.map(UpstreamBody::Hyper))
            }
            // Rare, and its future is large: boxed.
            UpstreamProtocol::Http1 if upgrade => Box::pin(self.send_upgrade(req)).await,
            UpstreamProtocol::Http1 => self.send_h1(req, added).await,
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        added: &AddedFields,
    ) -> Result<Sent, SendError> {
        let mut attempts = 0;
        let mut fresh_only = false;
        loop {
            attempts += 1;
            let (conn, reused) = match self.take_idle().filter(|_| !fresh_only) {
                Some(c) => {
                    self.h1_reused.fetch_add(1, Ordering::Relaxed);
                    (c, true)
                }
                None if attempts > MAX_UNSENT_ATTEMPTS => {
                    return Err(SendError::Connect {
                        request: Box::new(req),
                        error: std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "upstream closed new connections before the request was written",
                        ),
                    });
                }
                // Boxed: the connect path is rare and its future is large;
                // inline it would bloat (and memcpy) every request's future.
                None => match Box::pin(self.connect()).await {
                    Ok(s) => {
                        self.h1_new.fetch_add(1, Ordering::Relaxed);
                        (h1::Conn::new(s), false)
                    }
                    Err(error) => {
                        return Err(SendError::Connect {
                            request: Box::new(req),
                            error,
                        });
                    }
                },
            };
            match h1::exchange(self, conn, &mut req, added).await {
                Ok(resp) => return Ok(resp.map(UpstreamBody::H1)),
                Err((e, p)) => {
                    // A pooled connection the upstream closed just as we
                    // took it: nothing of an answer came. The request goes
                    // again on a fresh connection if it is intact (no body
                    // taken) and either nothing of it left or it may be
                    // repeated.
                    let dead = matches!(
                        e,
                        UpstreamError::Io(_) | UpstreamError::Framing(h1::FramingError::NoResponse)
                    );
                    let again = reused
                        && dead
                        && !p.response_bytes
                        && !p.body_polled
                        && (!p.wrote_any || crate::dispatch::retry::is_idempotent(req.method()))
                        && attempts <= MAX_UNSENT_ATTEMPTS;
                    if !again {
                        return Err(SendError::Request(e));
                    }
                    tracing::debug!(endpoint = %self.addr, error = %e, "pooled connection was closed: sending again on a new one");
                    fresh_only = true;
                }
            }
        }
    }

    async fn send_upgrade(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<Sent, SendError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let stream = match self.take_idle() {
                Some(conn) => Ok(conn.stream),
                None if attempts > MAX_UNSENT_ATTEMPTS => Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "upstream closed new connections before the request was written",
                )),
                None => self.connect().await,
            };
            let tx = match stream {
                Ok(s) => self.hyper_h1(s).await,
                Err(e) => Err(e),
            };
            let mut tx = match tx {
                Ok(tx) => tx,
                Err(error) => {
                    return Err(SendError::Connect {
                        request: Box::new(req),
                        error,
                    });
                }
            };
            match tx.try_send_request(req).await {
                // The connection becomes the tunnel, or closes with the
                // response: never pooled again.
                Ok(resp) => return Ok(resp.map(UpstreamBody::Hyper)),
                Err(mut e) => match e.take_message() {
                    // Died before the request was written: nothing reached
                    // the upstream, try another connection.
                    Some(r) => req = r,
                    None => return Err(SendError::Request(e.into_error().into())),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_endpoints_on_this_host_batch_their_writes() {
        let pool = |a: &str| {
            Pool::new(
                a.parse().unwrap(),
                PoolConfig::for_protocol(UpstreamProtocol::Http1),
            )
        };
        assert!(pool("127.0.0.1:9001").batches_writes());
        assert!(pool("127.8.0.2:9001").batches_writes());
        assert!(pool("[::1]:9001").batches_writes());
        assert!(!pool("10.0.0.7:9001").batches_writes());
        assert!(!pool("[2001:db8::7]:9001").batches_writes());
    }
}
