//! The running gateway: listener, connection cap, HTTP/1.1 + HTTP/2 serving,
//! graceful drain.
//!
//! ```no_run
//! use aether_gateway::{BackendRuntime, BackendRuntimeConfig, Router};
//! let config = BackendRuntimeConfig {
//!     listen_port: 8080,
//!     max_connections: 10000,
//! };
//! let mut router = Router::new();
//! // Register routes...
//! let runtime = BackendRuntime::new(config);
//! ```

mod background;
pub(crate) mod reload;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::body::ResponseBody;
use crate::config::{GatewayConfig, ServerSettings, Snapshot};
use crate::dispatch::Dispatcher;
use crate::dispatch::pipeline::{self, ConnInfo, ConnSlot, Shared};
use crate::router::Router;

/// The seed's minimal runtime settings: a port and a connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendRuntimeConfig {
    /// TCP port to listen on (all interfaces).
    pub listen_port: u16,
    /// Open client connections at most; more wait in the accept queue.
    pub max_connections: usize,
}

/// A gateway ready to start: listener settings plus the first config snapshot.
#[derive(Debug)]
pub struct BackendRuntime {
    settings: ServerSettings,
    snapshot: Snapshot,
    /// The file a reload reads (`None`: nothing to reload).
    config_file: Option<std::path::PathBuf>,
}

impl BackendRuntime {
    /// A runtime listening on `0.0.0.0:listen_port` with no routes yet.
    pub fn new(config: BackendRuntimeConfig) -> Self {
        let listen = SocketAddr::from(([0, 0, 0, 0], config.listen_port));
        BackendRuntime {
            settings: ServerSettings::new(listen, config.max_connections.max(1)),
            snapshot: Snapshot::default(),
            config_file: None,
        }
    }

    /// A runtime from a validated configuration file.
    pub fn from_config(config: GatewayConfig) -> Self {
        BackendRuntime {
            settings: config.server,
            snapshot: config.snapshot,
            config_file: None,
        }
    }

    /// Reload from `path` on SIGHUP, on `POST /admin/reload` and (with
    /// `[server] reload_on_change`) when the file changes.
    pub fn with_config_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// Serve these routes and services.
    pub fn with_routes(mut self, router: Router, dispatcher: Dispatcher) -> Self {
        self.snapshot.router = router;
        self.snapshot.dispatcher = dispatcher;
        self
    }

    /// Listener settings, for adjustment before [`BackendRuntime::start`].
    pub fn settings_mut(&mut self) -> &mut ServerSettings {
        &mut self.settings
    }

    /// Bind the listener and start serving in the background.
    ///
    /// # Errors
    /// When the listen address cannot be bound.
    pub async fn start(self) -> io::Result<RunningGateway> {
        // The first monotonic reading calibrates quanta's TSC clock (a few
        // ms): done here, not in the first request.
        let _ = crate::clock::Clock::monotonic(&crate::clock::SystemClock);
        let listen = self.settings.listen;
        let listener = bind(listen)
            .map_err(|e| io::Error::new(e.kind(), format!("listener {listen}: {e}")))?;
        let local_addr = listener.local_addr()?;
        let admin = match self.settings.admin_listen {
            Some(addr) => Some(
                bind(addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))?,
            ),
            None => None,
        };
        let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
        let shutdown = Stop::default();
        let now = Stop::default();
        // The relay stops after the HTTP drain (a voice call outlives a
        // request), with the serve task.
        let relay_stop = CancellationToken::new();
        let relay = match &self.settings.relay {
            Some(cfg) => {
                let own = std::iter::once(local_addr).chain(admin_addr).collect();
                let relay =
                    crate::relay::Relay::start(cfg.clone(), own, relay_stop.clone()).await?;
                if let Some(v) = &self.snapshot.voice {
                    v.set_bound_port(relay.udp_addr().port());
                }
                Some(relay)
            }
            None => None,
        };
        // Built before the listener serves: a listener with `[[server.tls]]`
        // never answers in cleartext.
        let tls = match &self.settings.tls {
            Some(store) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                store.server_config().map_err(io::Error::other)?,
            ))),
            None => None,
        };
        let cert_store = self.settings.tls.clone();
        let config_file = self.config_file.map(reload::ConfigFile::new);
        let task = tokio::spawn(serve(
            Listeners {
                listener,
                tls,
                admin,
            },
            self.settings,
            self.snapshot,
            config_file,
            relay.clone(),
            Stops {
                shutdown: shutdown.clone(),
                now: now.clone(),
                relay: relay_stop,
            },
        ));
        Ok(RunningGateway {
            local_addr,
            admin_addr,
            cert_store,
            relay,
            shutdown,
            now,
            task,
        })
    }
}

/// A gateway serving in the background.
#[derive(Debug)]
pub struct RunningGateway {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    cert_store: Option<Arc<crate::tls::CertStore>>,
    relay: Option<Arc<crate::relay::Relay>>,
    shutdown: Stop,
    /// Skips what is left of the shutdown delay and the drain.
    now: Stop,
    task: JoinHandle<()>,
}

impl RunningGateway {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's bound address, when `[admin]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The listener's certificates, when `[[server.tls]]` is configured: a
    /// config reload hands the new config's store to
    /// [`crate::tls::CertStore::replace`].
    pub fn cert_store(&self) -> Option<&Arc<crate::tls::CertStore>> {
        self.cert_store.as_ref()
    }

    /// The STUN/TURN relay, when `[relay]` is configured.
    pub fn relay(&self) -> Option<&Arc<crate::relay::Relay>> {
        self.relay.as_ref()
    }

    /// Begin a graceful shutdown: stop accepting, let in-flight requests finish.
    pub fn shutdown(&self) {
        self.shutdown.fire();
    }

    /// Stop now: what is left of the shutdown delay and of the drain is
    /// skipped, open connections and tunnels are cut.
    pub fn stop_now(&self) {
        self.shutdown.fire();
        self.now.fire();
    }

    /// Wait until the gateway has stopped (after [`RunningGateway::shutdown`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Serve until SIGTERM or SIGINT, then drain and return; a second
    /// signal during the shutdown stops at once.
    pub async fn run_until_signal(self) {
        // Registered once, before the first wait: a second signal that
        // comes right after the first is not lost.
        let mut signals = Signals::new();
        signals.recv().await;
        tracing::info!(
            "shutdown signal received: /readyz answers 503; a second signal stops at once"
        );
        self.shutdown();
        let now = self.now.clone();
        let wait = self.wait();
        tokio::pin!(wait);
        tokio::select! {
            () = &mut wait => return,
            () = signals.recv() => {
                tracing::warn!("second shutdown signal: closing every connection now");
                now.fire();
            }
        }
        wait.await;
    }
}

/// SIGTERM and SIGINT (Ctrl-C elsewhere), each delivery once.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.term) => {}
                () = next(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn http_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .writev(false)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        // PING idle HTTP/2 connections so dead peers are noticed and closed.
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
        .keep_alive_timeout(std::time::Duration::from_secs(20))
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// The bound sockets.
struct Listeners {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    admin: Option<TcpListener>,
}

/// How the serve task is told to stop, and tells the relay.
struct Stops {
    /// A graceful shutdown (readiness withdrawn, delay, drain).
    shutdown: Stop,
    /// Skip what is left of the delay and the drain.
    now: Stop,
    /// Cancelled when the serve task ends: the relay's sockets close.
    relay: CancellationToken,
}

async fn serve(
    listeners: Listeners,
    settings: ServerSettings,
    snapshot: Snapshot,
    config_file: Option<reload::ConfigFile>,
    relay: Option<Arc<crate::relay::Relay>>,
    stops: Stops,
) {
    let Stops {
        shutdown,
        now,
        relay: relay_stop,
    } = stops;
    let Listeners {
        listener,
        tls,
        admin,
    } = listeners;
    // However serve ends, the relay's sockets close with it.
    let _relay_stop = relay_stop.drop_guard();
    // Cancelled when the drain deadline passes: connections still open are cut.
    let hard_stop = Stop::default();
    // Fired `shutdown_delay` after `shutdown`: the listener closes and the
    // connections begin to drain. Until then the gateway serves as usual and
    // only `/readyz` (503) tells load balancers it is going.
    let closing = Stop::default();
    {
        let (shutdown, closing, now, delay) = (
            shutdown.clone(),
            closing.clone(),
            now.clone(),
            settings.shutdown_delay,
        );
        tokio::spawn(async move {
            shutdown.token.cancelled().await;
            if !delay.is_zero() {
                tracing::info!(delay = ?delay, "readiness withdrawn: closing the listener after the shutdown delay");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = now.token.cancelled() => {}
                }
            }
            closing.fire();
        });
    }
    // Background work of the config (probes, discovery, JWKS refresh,
    // Redis, reloads) stops with the listener.
    let background = closing.token.child_token();
    let mut tasks = background::Background::new(background.clone());
    tasks.sync(&snapshot);
    let (reload, reload_rx) =
        reload::ReloadHandle::new(config_file.as_ref().map(|f| f.path().to_owned()));
    if let Some(store) = &settings.tls {
        tokio::spawn(Arc::clone(store).watch(background.clone()));
    }
    let shared = Arc::new(Shared {
        snapshot: arc_swap::ArcSwap::from_pointee(snapshot),
        tunnels: TaskTracker::new(),
        hard_stop: hard_stop.token.clone(),
        tunnel_idle_timeout: settings.tunnel_idle_timeout,
        relay,
        reload,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        draining: Arc::clone(&shutdown.fired),
        tls: settings.tls.clone(),
        #[cfg(feature = "otel")]
        otel: settings.log.otlp_endpoint.as_deref().and_then(|endpoint| {
            crate::metrics::otel::SpanExport::start(endpoint, tokio::runtime::Handle::current())
                .map(Arc::new)
                .inspect_err(|e| tracing::error!(error = %e, "no span export"))
                .ok()
        }),
    });
    if tls.is_some() {
        shared.metrics.tls_listener();
    }
    spawn_sweeper(Arc::clone(&shared), background.clone());
    tokio::spawn(reload::run(
        reload::Reloader {
            file: config_file,
            server: settings.clone(),
            background: tasks,
        },
        reload_rx,
        Arc::clone(&shared),
        background.clone(),
    ));
    // The admin API outlives the drain (it stops when this function
    // returns): `/readyz` says 503 to load balancers while connections drain.
    let admin_stop = CancellationToken::new();
    let _admin_stop = admin_stop.clone().drop_guard();
    if let Some(admin) = admin {
        tokio::spawn(crate::admin::serve(admin, Arc::clone(&shared), admin_stop));
    }
    let env = Arc::new(ConnEnv {
        shared: Arc::clone(&shared),
        builder: http_builder(&settings),
        tls,
        settings: settings.clone(),
        shutdown: closing.clone(),
        hard_stop: hard_stop.clone(),
    });
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));

    loop {
        // At the cap we stop accepting: new connections wait in the kernel's
        // accept queue (as HAProxy's maxconn does) instead of being dropped.
        let permit = tokio::select! {
            biased;
            _ = closing.token.cancelled() => break,
            p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = closing.token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let permit = ConnSlot {
            _permit: permit,
            _open: crate::metrics::GaugeGuard::inc(&shared.metrics.connections),
        };
        // The handshake runs in the connection's task: a slow client never
        // holds up the accept loop. Plain connections keep their own
        // monomorphised path, with no TLS state in it.
        if env.tls.is_some() {
            connections.spawn(serve_tls(stream, peer, permit, Arc::clone(&env)));
        } else {
            connections.spawn(serve_connection(
                stream,
                peer,
                permit,
                Arc::clone(&env),
                false,
            ));
        }
    }

    drop(listener);
    connections.close();
    shared.tunnels.close();
    tracing::info!(
        open_connections = connections.len(),
        open_tunnels = shared.tunnels.len(),
        deadline = ?settings.shutdown_drain,
        "listener closed; draining"
    );
    let drained = tokio::select! {
        r = tokio::time::timeout(settings.shutdown_drain, async {
            connections.wait().await;
            shared.tunnels.wait().await;
        }) => r.is_ok(),
        () = now.token.cancelled() => false,
    };
    if !drained {
        tracing::warn!(
            connections = connections.len(),
            tunnels = shared.tunnels.len(),
            "closing what is left (the drain deadline passed, or a second signal came)"
        );
        hard_stop.fire();
        connections.wait().await;
        shared.tunnels.wait().await;
    }
    // The last spans go out before the process does. The export runs on
    // this runtime, so the waiting happens on the blocking pool.
    #[cfg(feature = "otel")]
    if let Some(export) = shared.otel.clone() {
        let _ = tokio::task::spawn_blocking(move || export.shutdown()).await;
    }
    tracing::info!("gateway stopped");
}

/// The sweeper that forgets idle keys of every in-process counter of the
/// config in effect (off the request path: a sweep of a million keys takes
/// milliseconds, run on the blocking pool).
fn spawn_sweeper(shared: Arc<Shared>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            // A snapshot built in code has no interval: sweep each second.
            let interval = shared
                .snapshot
                .load()
                .rate_limits
                .sweep_interval
                .max(std::time::Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
            let rules = shared.snapshot.load().rate_limits.all.clone();
            if rules.is_empty() {
                continue;
            }
            let _ = tokio::task::spawn_blocking(move || {
                for rule in &rules {
                    rule.local_limiter().sweep();
                }
            })
            .await;
        }
    });
}

/// What every connection task of one listener shares.
struct ConnEnv {
    shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    /// `[[server.tls]]`: every connection is a TLS handshake first.
    tls: Option<tokio_rustls::TlsAcceptor>,
    settings: ServerSettings,
    shutdown: Stop,
    hard_stop: Stop,
}

/// The TLS handshake, bounded by the header-read timeout (a client that
/// opens TCP and never finishes it is cut like a slowloris), then HTTP over
/// the TLS stream.
async fn serve_tls(stream: TcpStream, peer: SocketAddr, permit: ConnSlot, env: Arc<ConnEnv>) {
    let Some(acceptor) = &env.tls else { return };
    let handshake = tokio::time::timeout(env.settings.header_read_timeout, acceptor.accept(stream));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                env.shared.metrics.tls_handshake_failed("error");
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                env.shared.metrics.tls_handshake_failed("timeout");
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = env.shutdown.token.cancelled() => return,
    };
    serve_connection(tls, peer, permit, env, true).await;
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    permit: ConnSlot,
    env: Arc<ConnEnv>,
    tls: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ConnEnv {
        shared,
        builder,
        settings,
        shutdown,
        hard_stop,
        ..
    } = &*env;
    let shared = Arc::clone(shared);
    // One Arc per connection: each request clones a single pointer. The
    // connection slot lives in it, so a WebSocket tunnel that outlives the
    // HTTP connection keeps counting against `max_connections`.
    let ctx = Arc::new(ConnCtx {
        shared,
        info: if tls {
            ConnInfo::new(peer, permit).over_tls()
        } else {
            ConnInfo::new(peer, permit)
        },
        activity: Activity::new(),
    });
    let service = {
        let ctx = Arc::clone(&ctx);
        service_fn(move |req| {
            let ctx = Arc::clone(&ctx);
            async move {
                // The guard ends the request when the response body is done,
                // or when hyper drops this future (an HTTP/2 stream reset).
                let guard = InFlight::begin(ctx);
                let mut access = None;
                let resp = pipeline::handle(&guard.0.shared, &guard.0.info, req, &mut access).await;
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    body,
                    access,
                    guard,
                    handed: false,
                }))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);

    // Idle watchdog: before the first request the limit is the header-read
    // timeout (a client that connects and says nothing, or stalls in the
    // HTTP/2 preface, is cut like a slowloris); afterwards `idle_timeout`.
    // Requests only touch two atomics; the timer is per connection.
    let mut closing = false;
    let mut give_up_at: Option<tokio::time::Instant> = None;
    let result = loop {
        let wake = give_up_at.unwrap_or_else(|| {
            if ctx.activity.requests() == 0 {
                // Nothing tells us when the first request arrives: look again
                // when the shortest limit could apply.
                let born = ctx.activity.born;
                let shortest = settings
                    .header_read_timeout
                    .min(settings.idle_timeout)
                    .min(settings.send_timeout);
                let first = born + shortest;
                if first > tokio::time::Instant::now() {
                    first
                } else {
                    born + settings.header_read_timeout
                }
            } else {
                // Busy connections are looked at every send timeout too.
                ctx.activity
                    .idle_deadline(settings.idle_timeout)
                    .min(tokio::time::Instant::now() + settings.send_timeout)
            }
        });
        let hard = hard_stop.token.cancelled();
        let shut = shutdown.token.cancelled();
        let sleep = tokio::time::sleep_until(wake);
        tokio::pin!(hard, shut, sleep);
        tokio::select! {
            // The connection first: it is what wakes this task per request.
            biased;
            r = conn.as_mut() => break r,
            () = Armed::new(hard, |_| hard_stop.fired()) => break Ok(()),
            () = Armed::new(shut, |_| shutdown.fired()), if !closing => {
                // Bounded by the drain deadline (hard_stop), not by the watchdog.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = Armed::new(sleep, |s| s.is_elapsed()), if !closing || give_up_at.is_some() => {
                if give_up_at.is_some() {
                    // The peer ignored the close: drop the connection.
                    break Ok(());
                }
                if ctx.activity.send_stalled(settings.send_timeout) {
                    // A client that stopped reading a response holds a slot
                    // and an upstream connection: cut it (nginx's send_timeout).
                    tracing::debug!(%peer, "client stopped reading: closing");
                    break Ok(());
                }
                // Decided now: the first request may have arrived while we slept.
                let limit = if ctx.activity.requests() == 0 {
                    settings.header_read_timeout
                } else {
                    settings.idle_timeout
                };
                if ctx.activity.is_idle_for(limit) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    give_up_at = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A one-way stop signal: a token to wait on, and a flag set before the
/// token fires that any number of connection tasks can read on every wake
/// without a lock (`CancellationToken::is_cancelled` takes its mutex).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl Stop {
    fn fire(&self) {
        // Before the wake-ups: a task woken by the token reads `true`.
        self.fired.store(true, Ordering::Release);
        self.token.cancel();
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

/// One of a connection task's stop conditions (shutdown, hard stop, the
/// watchdog's timer), polled on every wake of the task, i.e. several times
/// per request. Its first poll registers the task's waker with the inner
/// future; later polls only ask `fired` (an atomic read) instead of
/// polling the inner future again, which would lock a `Notify`'s waiter
/// list or touch the timer entry each time (bench/callgrind.sh).
///
/// Sound because a spawned task's waker is the same on every poll: the
/// waker registered first is the one that wakes the task when the
/// condition fires, and `fired` then reports it.
struct Armed<'a, F, C> {
    fut: std::pin::Pin<&'a mut F>,
    fired: C,
    registered: bool,
}

impl<'a, F, C> Armed<'a, F, C>
where
    F: std::future::Future,
    C: FnMut(std::pin::Pin<&mut F>) -> bool + Unpin,
{
    fn new(fut: std::pin::Pin<&'a mut F>, fired: C) -> Self {
        Armed {
            fut,
            fired,
            registered: false,
        }
    }
}

impl<F, C> std::future::Future for Armed<'_, F, C>
where
    F: std::future::Future,
    C: FnMut(std::pin::Pin<&mut F>) -> bool + Unpin,
{
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        if this.registered {
            return if (this.fired)(this.fut.as_mut()) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            };
        }
        this.registered = true;
        this.fut.as_mut().poll(cx).map(drop)
    }
}

/// How long a connection closed for idleness may take to go away.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Per-connection state shared by the connection task and its requests.
struct ConnCtx {
    shared: Arc<Shared>,
    info: ConnInfo,
    activity: Activity,
}

/// Requests in flight and when the connection last became idle.
struct Activity {
    born: tokio::time::Instant,
    in_flight: AtomicUsize,
    requests: AtomicUsize,
    /// Milliseconds after `born` when the last request finished.
    idle_since_ms: AtomicU64,
    /// Response bodies that handed hyper a piece and wait for it to ask for
    /// the next: while any does and hyper asks for nothing, the client is not
    /// reading.
    handed: AtomicUsize,
    /// Milliseconds after `born` when hyper last asked a response body for data.
    pulled_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            born: tokio::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            handed: AtomicUsize::new(0),
            pulled_ms: AtomicU64::new(0),
        }
    }

    fn pulled(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.pulled_ms.store(ms, Ordering::Relaxed);
    }

    /// True when a response waits on a client that has read nothing for `limit`.
    fn send_stalled(&self, limit: std::time::Duration) -> bool {
        let pulled = std::time::Duration::from_millis(self.pulled_ms.load(Ordering::Relaxed));
        self.handed.load(Ordering::Relaxed) > 0 && self.born.elapsed() >= pulled + limit
    }

    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.idle_since_ms.store(ms, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    fn idle_deadline(&self, limit: std::time::Duration) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Busy: look again one period from now.
            return now + limit;
        }
        let since = std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        (self.born + since + limit).max(now + std::time::Duration::from_millis(1))
    }

    fn is_idle_for(&self, limit: std::time::Duration) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let since = std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        self.born.elapsed() >= since + limit
    }
}

/// One request in flight on a connection, for the idle watchdog.
struct InFlight(Arc<ConnCtx>);

impl InFlight {
    fn begin(ctx: Arc<ConnCtx>) -> Self {
        ctx.activity.begin();
        InFlight(ctx)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.end();
    }
}

/// A response body that keeps its request in flight until it is dropped,
/// and tells the watchdog whether the client keeps reading it.
struct Tracked {
    body: ResponseBody,
    /// The request's access-log line, written when the body drops (after
    /// the last byte, or when the client went away).
    /// Boxed: without an access log the body stays small, and hyper moves
    /// it a few times per request.
    access: Option<Box<crate::metrics::access::AccessLine>>,
    guard: InFlight,
    /// This body handed hyper a piece and waits to be asked again.
    handed: bool,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.handed {
            self.guard.0.activity.handed.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::upstream::pool::UpstreamError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        let activity = &this.guard.0.activity;
        activity.pulled();
        if let (Some(line), std::task::Poll::Ready(Some(Ok(frame)))) = (&mut this.access, &polled)
            && let Some(data) = frame.data_ref()
        {
            line.bytes_out += data.len() as u64;
        }
        let handed = matches!(polled, std::task::Poll::Ready(Some(Ok(_))));
        if handed != this.handed {
            if handed {
                activity.handed.fetch_add(1, Ordering::Relaxed);
            } else {
                activity.handed.fetch_sub(1, Ordering::Relaxed);
            }
            this.handed = handed;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
