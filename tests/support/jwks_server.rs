//! A real JWKS endpoint on loopback whose document, `Cache-Control` and
//! health the test changes while the gateway runs; it counts every fetch.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    document: Mutex<String>,
    cache_control: Mutex<Option<String>>,
    failing: AtomicBool,
    fetches: AtomicUsize,
    fetched: Notify,
}

/// A running JWKS server; stops when dropped.
pub struct JwksServer {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: tokio_util::sync::CancellationToken,
}

impl JwksServer {
    pub async fn start(document: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(State::default());
        *state.document.lock().unwrap() = document;
        let stop = tokio_util::sync::CancellationToken::new();
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            state: Arc::clone(&state),
            stop: stop.clone(),
        };
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                    () = stop.cancelled() => return,
                };
                let state = Arc::clone(&state);
                let stop = stop.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn set_document(&self, doc: String) {
        *self.state.document.lock().unwrap() = doc;
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    /// Answer 503 to every fetch (an outage) or serve again.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Fetches answered so far.
    pub fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Wait (with a deadline) until at least `n` fetches were answered.
    pub async fn wait_for_fetches(&self, n: usize, deadline: Duration) {
        tokio::time::timeout(deadline, async {
            loop {
                let notified = self.state.fetched.notified();
                if self.fetches() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("JWKS fetched {} times, wanted {n}", self.fetches()));
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn answer(state: &State) -> Response<Full<Bytes>> {
    let resp = if state.failing.load(Ordering::SeqCst) {
        let mut r = Response::new(Full::new(Bytes::from_static(b"down")));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from(
            state.document.lock().unwrap().clone(),
        )));
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        if let Some(cc) = state.cache_control.lock().unwrap().as_deref() {
            r.headers_mut().insert("cache-control", cc.parse().unwrap());
        }
        r
    };
    // Counted once the answer is ready, so a waiter that wakes sees the
    // document the gateway is about to install.
    state.fetches.fetch_add(1, Ordering::SeqCst);
    state.fetched.notify_waiters();
    resp
}
