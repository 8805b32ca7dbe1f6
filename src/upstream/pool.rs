//! Per-endpoint connection pool over hyper's low-level client connections.
//!
//! We hold the connections ourselves (rather than hyper-util's legacy client)
//! so that a connect failure hands the request back untouched — it was
//! provably never sent and can go to another endpoint — and so that later
//! health and circuit-breaking work sees every connection of an endpoint.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::RequestBody;

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
}

impl PoolConfig {
    /// The defaults of `[[services]]` for `protocol`.
    pub fn for_protocol(protocol: UpstreamProtocol) -> Self {
        PoolConfig {
            protocol,
            connect_timeout: Duration::from_secs(2),
            max_idle: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// What [`Pool::send`] gives back: the response head and, for HTTP/1.1, the
/// connection to return once the body has been read.
pub type Sent = (Response<Incoming>, Option<ReturnToPool>);

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
    Request(hyper::Error),
}

struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// Connections to one endpoint.
pub struct Pool {
    addr: SocketAddr,
    config: PoolConfig,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// An HTTP/1.1 connection on loan to a response body, returned when it ends.
pub struct ReturnToPool {
    pool: Arc<Pool>,
    tx: http1::SendRequest<RequestBody>,
}

impl ReturnToPool {
    /// The response was read to its end: the connection may serve another request.
    pub fn give_back(self) {
        let ReturnToPool { pool, mut tx } = self;
        if tx.is_closed() {
            return;
        }
        if tx.is_ready() {
            pool.put(tx);
            return;
        }
        // hyper marks the connection ready once its task has seen the end of
        // the exchange, which may be a scheduler tick after the body's end.
        tokio::spawn(async move {
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), tx.ready()).await {
                pool.put(tx);
            }
        });
    }
}

impl Pool {
    /// An empty pool for `addr`.
    pub fn new(addr: SocketAddr, config: PoolConfig) -> Arc<Self> {
        Arc::new(Pool {
            addr,
            config,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
        })
    }

    /// Its limits.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Idle HTTP/1.1 connections currently held.
    pub fn idle_count(&self) -> usize {
        // Connections the upstream closed are dropped lazily on the next
        // take; they are not counted as usable.
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|c| !c.tx.is_closed())
            .count()
    }

    fn put(&self, tx: http1::SendRequest<RequestBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.config.max_idle {
            idle.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if !c.tx.is_closed() && c.since.elapsed() < self.config.idle_timeout {
                return Some(c.tx);
            }
        }
        None
    }

    async fn connect_tcp(&self) -> std::io::Result<TokioIo<TcpStream>> {
        let stream =
            tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(self.addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
        stream.set_nodelay(true)?;
        Ok(TokioIo::new(stream))
    }

    async fn connect_h1(&self) -> std::io::Result<http1::SendRequest<RequestBody>> {
        let io = self.connect_tcp().await?;
        let (tx, conn) = http1::Builder::new()
            .writev(false)
            .handshake(io)
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
        let io = self.connect_tcp().await?;
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
    /// The returned [`ReturnToPool`] (HTTP/1.1 only) must be given back when the
    /// response body has been read to its end; dropping it closes the connection.
    ///
    /// # Errors
    /// [`SendError::Connect`] with the untouched request when no connection
    /// could be made; [`SendError::Request`] when the exchange failed after the
    /// request was handed to a connection.
    pub async fn send(self: &Arc<Self>, mut req: Request<RequestBody>) -> Result<Sent, SendError> {
        // Bounds the loop below for an upstream that accepts and closes at once.
        const MAX_UNSENT_ATTEMPTS: u32 = 3;
        let mut attempts = 0;
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
                let resp = tx.send_request(req).await.map_err(SendError::Request)?;
                Ok((resp, None))
            }
            UpstreamProtocol::Http1 => loop {
                attempts += 1;
                let mut tx = match self.take_idle() {
                    Some(tx) => tx,
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
                    None => match Box::pin(self.connect_h1()).await {
                        Ok(tx) => tx,
                        Err(error) => {
                            return Err(SendError::Connect {
                                request: Box::new(req),
                                error,
                            });
                        }
                    },
                };
                match tx.try_send_request(req).await {
                    Ok(resp) => {
                        let conn = ReturnToPool {
                            pool: Arc::clone(self),
                            tx,
                        };
                        return Ok((resp, Some(conn)));
                    }
                    Err(mut e) => match e.take_message() {
                        // The pooled connection died before the request was
                        // written: nothing reached the upstream, try another.
                        Some(r) => req = r,
                        None => return Err(SendError::Request(e.into_error())),
                    },
                }
            },
        }
    }
}
