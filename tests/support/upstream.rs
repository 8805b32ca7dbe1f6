//! A real upstream HTTP server for the tests, steered by the request's query:
//! `slow_ms=N` (wait before answering), `download=N` (stream N bytes),
//! `status=N`, `hop=1` (answer with hop-by-hop headers); any body is counted
//! as it streams. WebSocket upgrades are echoed. Answers are JSON describing
//! what arrived.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Which HTTP versions the upstream accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 and h2c (prior knowledge).
    Auto,
    /// HTTP/1.1 only.
    Http1Only,
    /// h2c only.
    H2Only,
}

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The gateway's side of the connection (same port = same pooled connection).
    pub peer: SocketAddr,
    pub method: String,
    pub uri: String,
    pub version: String,
    pub headers: http::HeaderMap,
}

struct State {
    hits: AtomicUsize,
    arrived: Notify,
    seen: Mutex<Vec<Seen>>,
    /// `/health` answers: their status and body, and how many were asked.
    health_status: AtomicU16,
    health_body: Mutex<String>,
    health_hits: AtomicUsize,
    /// Every other request answers with this status (0: as the query says).
    force_status: AtomicU16,
    /// Every other request waits this long first.
    delay_ms: AtomicU64,
    /// `/health` waits this long first (a far or slow endpoint as the probes see it).
    health_delay_ms: AtomicU64,
    /// TLS handshakes that failed (TLS upstreams only).
    tls_failures: AtomicUsize,
}

impl Default for State {
    fn default() -> Self {
        State {
            hits: AtomicUsize::new(0),
            arrived: Notify::new(),
            seen: Mutex::new(Vec::new()),
            health_status: AtomicU16::new(200),
            health_body: Mutex::new("{\"status\":\"ok\"}".to_owned()),
            health_hits: AtomicUsize::new(0),
            force_status: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            health_delay_ms: AtomicU64::new(0),
            tls_failures: AtomicUsize::new(0),
        }
    }
}

/// A running test upstream.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    state: Arc<State>,
    stop: tokio_util::sync::CancellationToken,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        Self::start_with(name, Proto::Auto).await
    }

    pub async fn start_with(name: &'static str, proto: Proto) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, name, proto, None)
    }

    /// An upstream speaking TLS with `config` (its ALPN list decides h2 or
    /// HTTP/1.1; a client verifier in it makes it an mTLS upstream).
    pub async fn start_tls(name: &'static str, config: rustls::ServerConfig) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        Self::serve(listener, name, Proto::Auto, Some(acceptor))
    }

    /// TLS handshakes that failed (a refused client certificate, an
    /// unknown CA on the client's side).
    pub fn tls_failures(&self) -> usize {
        self.state.tls_failures.load(Ordering::SeqCst)
    }

    /// Wait (with a deadline) until at least `n` TLS handshakes failed: with
    /// TLS 1.3 the client side finishes first, so the upstream's verdict on
    /// a client certificate can come after the gateway has answered.
    pub async fn wait_for_tls_failures(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.state.arrived.notified();
                if self.tls_failures() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{} TLS failures, wanted {n}", self.tls_failures()));
    }

    /// A fresh upstream on the address of a stopped one (same name, new counters).
    pub async fn restart(&self) -> Upstream {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => return Self::serve(l, self.name, Proto::Auto, None),
                // The old accept loop may not have dropped its socket yet.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        }
    }

    /// `/health` answers `status` with `body` from now on.
    pub fn set_health(&self, status: u16, body: &str) {
        *self.state.health_body.lock().unwrap() = body.to_owned();
        self.state.health_status.store(status, Ordering::SeqCst);
    }

    /// Health probes answered so far.
    pub fn health_hits(&self) -> usize {
        self.state.health_hits.load(Ordering::SeqCst)
    }

    /// Wait (with a deadline) until at least `n` probes have been answered.
    pub async fn wait_for_probes(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.state.arrived.notified();
                if self.health_hits() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "upstream {} answered {} probes, wanted {n}",
                self.name,
                self.health_hits()
            )
        });
    }

    /// Every request (but `/health`) answers `status` (0: back to normal).
    pub fn set_status(&self, status: u16) {
        self.state.force_status.store(status, Ordering::SeqCst);
    }

    /// `/health` waits `ms` before its answer.
    pub fn set_health_delay_ms(&self, ms: u64) {
        self.state.health_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every request (but `/health`) waits `ms` before its answer.
    pub fn set_delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    fn serve(
        listener: TcpListener,
        name: &'static str,
        proto: Proto,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            name,
            state: Arc::default(),
            stop: tokio_util::sync::CancellationToken::new(),
        };
        let server = up.clone();
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                    _ = server.stop.cancelled() => return,
                };
                let server = server.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = {
                        let server = server.clone();
                        service_fn(move |req| server.clone().handle(peer, req))
                    };
                    let mut b = auto::Builder::new(TokioExecutor::new());
                    let b = match proto {
                        Proto::Auto => b,
                        Proto::Http1Only => b.http1_only(),
                        Proto::H2Only => {
                            b.http2().max_concurrent_streams(1000);
                            b.http2_only()
                        }
                    };
                    match tls {
                        None => {
                            let conn = b.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = server.stop.cancelled() => {}
                            }
                        }
                        Some(acceptor) => {
                            let stream = match acceptor.accept(stream).await {
                                Ok(s) => s,
                                Err(_) => {
                                    server.state.tls_failures.fetch_add(1, Ordering::SeqCst);
                                    server.state.arrived.notify_waiters();
                                    return;
                                }
                            };
                            let conn = b.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = server.stop.cancelled() => {}
                            }
                        }
                    }
                });
            }
        });
        up
    }

    /// Stop accepting and drop every open connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Requests whose head arrived so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }

    /// Wait (with a deadline) until at least `n` request heads have arrived.
    pub async fn wait_for_hits(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let notified = self.state.arrived.notified();
                if self.hits() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "upstream {} saw {} requests, wanted {n}",
                self.name,
                self.hits()
            )
        });
    }

    async fn handle(
        self,
        peer: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<Response<TestBody>, Infallible> {
        if req.uri().path() == "/health" {
            let delay = self.state.health_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                // Slowed on purpose: the measured latency under test.
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let status = self.state.health_status.load(Ordering::SeqCst);
            let body = self.state.health_body.lock().unwrap().clone();
            let mut resp = Response::new(TestBody::Full(Some(Bytes::from(body))));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
            self.state.health_hits.fetch_add(1, Ordering::SeqCst);
            self.state.arrived.notify_waiters();
            return Ok(resp);
        }
        let seen = Seen {
            peer,
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            version: format!("{:?}", req.version()),
            headers: req.headers().clone(),
        };
        self.state.seen.lock().unwrap().push(seen.clone());
        self.state.hits.fetch_add(1, Ordering::SeqCst);
        self.state.arrived.notify_waiters();

        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();

        if req.headers().contains_key(http::header::UPGRADE) {
            return Ok(websocket_echo(&mut req));
        }
        let delay = self.state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            // Slowed on purpose: the behaviour under test.
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if let Some(ms) = query.get("slow_ms").and_then(|v| v.parse().ok()) {
            // The upstream is slow on purpose: this is the behaviour under test.
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(n) = query.get("download").and_then(|v| v.parse().ok()) {
            let mut resp = Response::new(TestBody::Stream { left: n });
            resp.headers_mut()
                .insert("content-length", n.to_string().parse().unwrap());
            return Ok(resp);
        }

        // Count the body as it streams; never hold it.
        let mut body = req.into_body();
        let mut body_bytes = 0u64;
        let mut body_text = Vec::new();
        let mut trailers = BTreeMap::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(t) = f.trailers_ref() {
                        for (k, v) in t {
                            trailers.insert(k.to_string(), v.to_str().unwrap_or("?").to_owned());
                        }
                    }
                    if let Some(d) = f.data_ref() {
                        body_bytes += d.len() as u64;
                        if body_text.len() < 4096 {
                            body_text.extend_from_slice(&d[..d.len().min(4096 - body_text.len())]);
                        }
                    }
                }
                Err(_) => break,
            }
        }
        let headers: BTreeMap<String, String> = seen
            .headers
            .keys()
            .map(|k| {
                let all: Vec<&str> = seen
                    .headers
                    .get_all(k)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?"))
                    .collect();
                (k.to_string(), all.join(" | "))
            })
            .collect();
        let json = serde_json::json!({
            "instance": self.name,
            "method": seen.method,
            "uri": seen.uri,
            "version": seen.version,
            "headers": headers,
            "body_bytes": body_bytes,
            "body": String::from_utf8_lossy(&body_text),
            "trailers": trailers,
        });
        let mut resp = Response::new(TestBody::Full(Some(Bytes::from(json.to_string()))));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        resp.headers_mut()
            .insert("x-upstream", self.name.parse().unwrap());
        if let Some(s) = query.get("status").and_then(|v| v.parse::<u16>().ok()) {
            *resp.status_mut() = StatusCode::from_u16(s).unwrap();
        }
        let forced = self.state.force_status.load(Ordering::SeqCst);
        if forced != 0 {
            *resp.status_mut() = StatusCode::from_u16(forced).unwrap();
        }
        if query.contains_key("hop") {
            let h = resp.headers_mut();
            h.insert("connection", "x-upstream-hop".parse().unwrap());
            h.insert("x-upstream-hop", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("proxy-connection", "keep-alive".parse().unwrap());
        }
        Ok(resp)
    }
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<TestBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let key = req.headers().get("sec-websocket-key").cloned();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    break;
                }
            } else if msg.is_close() {
                break;
            }
        }
    });
    let mut resp = Response::new(TestBody::Full(None));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    if let Some(k) = key {
        h.insert(
            "sec-websocket-accept",
            derive_accept_key(k.as_bytes()).parse().unwrap(),
        );
    }
    resp
}

/// A response body: bytes, or `left` generated bytes streamed in 64 KiB chunks.
pub enum TestBody {
    Full(Option<Bytes>),
    Stream { left: u64 },
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        match self.get_mut() {
            TestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            TestBody::Stream { left } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(CHUNK.len() as u64) as usize;
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
            }
        }
    }
}
