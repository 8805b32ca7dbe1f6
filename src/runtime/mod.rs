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

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{GatewayConfig, ServerSettings, Snapshot};
use crate::dispatch::Dispatcher;
use crate::dispatch::pipeline::{self, ConnInfo, Shared};
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
}

impl BackendRuntime {
    /// A runtime listening on `0.0.0.0:listen_port` with no routes yet.
    pub fn new(config: BackendRuntimeConfig) -> Self {
        let listen = SocketAddr::from(([0, 0, 0, 0], config.listen_port));
        BackendRuntime {
            settings: ServerSettings::new(listen, config.max_connections.max(1)),
            snapshot: Snapshot::default(),
        }
    }

    /// A runtime from a validated configuration file.
    pub fn from_config(config: GatewayConfig) -> Self {
        BackendRuntime {
            settings: config.server,
            snapshot: config.snapshot,
        }
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
        let listener = bind(self.settings.listen)?;
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            self.settings,
            self.snapshot,
            shutdown.clone(),
        ));
        Ok(RunningGateway {
            local_addr,
            shutdown,
            task,
        })
    }
}

/// A gateway serving in the background.
#[derive(Debug)]
pub struct RunningGateway {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningGateway {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Begin a graceful shutdown: stop accepting, let in-flight requests finish.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait until the gateway has stopped (after [`RunningGateway::shutdown`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Serve until SIGTERM or SIGINT, then drain and return.
    pub async fn run_until_signal(self) {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: draining");
        self.shutdown();
        self.wait().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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

async fn serve(
    listener: TcpListener,
    settings: ServerSettings,
    snapshot: Snapshot,
    shutdown: CancellationToken,
) {
    // Cancelled when the drain deadline passes: connections still open are cut.
    let hard_stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        snapshot: arc_swap::ArcSwap::from_pointee(snapshot),
        tunnels: TaskTracker::new(),
        hard_stop: hard_stop.clone(),
    });
    let builder = Arc::new(http_builder(&settings));
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));

    loop {
        // At the cap we stop accepting: new connections wait in the kernel's
        // accept queue (as HAProxy's maxconn does) instead of being dropped.
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
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
        connections.spawn(serve_connection(
            stream,
            peer,
            permit,
            Arc::clone(&shared),
            Arc::clone(&builder),
            shutdown.clone(),
            hard_stop.clone(),
        ));
    }

    drop(listener);
    connections.close();
    shared.tunnels.close();
    let open = connections.len();
    tracing::info!(open_connections = open, deadline = ?settings.shutdown_drain, "listener closed; draining");
    let drained = tokio::time::timeout(settings.shutdown_drain, async {
        connections.wait().await;
        shared.tunnels.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            tunnels = shared.tunnels.len(),
            "drain deadline reached: closing what is left"
        );
        hard_stop.cancel();
        connections.wait().await;
        shared.tunnels.wait().await;
    }
    tracing::info!("gateway stopped");
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) {
    // One Arc per connection: each request clones a single pointer.
    let ctx = Arc::new((shared, ConnInfo::new(peer)));
    let service = service_fn(move |req| {
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(pipeline::handle(&ctx.0, &ctx.1, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                _ = hard_stop.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(permit);
}
