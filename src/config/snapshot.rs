//! The compiled configuration a request runs against.

use std::net::SocketAddr;
use std::time::Duration;

use crate::dispatch::Dispatcher;
use crate::dispatch::forwarded::TrustedProxies;
use crate::router::Router;

/// Routes, services and per-request settings: one immutable version of the
/// config. A request loads it once and uses that version to its end.
#[derive(Debug)]
pub struct Snapshot {
    /// The route table.
    pub router: Router,
    /// Services and their endpoints.
    pub dispatcher: Dispatcher,
    /// Proxies whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Default request body cap in bytes.
    pub max_request_body_bytes: u64,
    /// Longest pause between two pieces of a request body.
    pub client_body_timeout: Duration,
    /// Path normalisation rules.
    pub path_options: crate::router::PathOptions,
    /// JWT validation, when `[auth]` is configured.
    pub auth: Option<std::sync::Arc<crate::auth::AuthMiddleware>>,
    /// Headers carrying the validated identity upstream; always stripped
    /// from clients.
    pub identity_headers: super::auth::IdentityHeaders,
    /// Rate limits: global rules, the shared backend, header settings.
    pub rate_limits: super::ratelimit::RateLimits,
    /// Geo routing, when `[geo]` is configured (the services hold it too).
    pub geo: Option<std::sync::Arc<crate::geo::GeoRoutingPolicy>>,
    /// The issuer of TURN credentials, when `[relay]` and `[auth]` are
    /// configured (its route is in `router`).
    pub voice: Option<std::sync::Arc<crate::relay::credentials::VoiceCredentials>>,
    /// The parts a reload may take over (see [`super::reuse`]).
    pub components: super::reuse::Components,
    /// The bearer token the admin API requires, when `[admin] token_env` is set.
    pub admin_token: Option<crate::admin::AdminToken>,
    /// The file's values (for `GET /admin/config`, secrets redacted there).
    pub source: std::sync::Arc<toml::Table>,
    /// `[log] access_log`: one line per request at target `access`.
    pub access_log: bool,
    /// `[log] incoming_trace`: whose `traceparent` a request continues.
    pub incoming_trace: crate::metrics::traceparent::IncomingTrace,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            router: Router::default(),
            dispatcher: Dispatcher::default(),
            trusted_proxies: TrustedProxies::default(),
            max_request_body_bytes: 16 * 1024 * 1024,
            client_body_timeout: Duration::from_secs(30),
            path_options: crate::router::PathOptions::default(),
            auth: None,
            identity_headers: super::auth::IdentityHeaders::default(),
            rate_limits: super::ratelimit::RateLimits::default(),
            geo: None,
            voice: None,
            components: super::reuse::Components::default(),
            admin_token: None,
            source: std::sync::Arc::default(),
            access_log: true,
            incoming_trace: crate::metrics::traceparent::IncomingTrace::Continue,
        }
    }
}

/// Listener settings, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Open connections at most.
    pub max_connections: usize,
    /// Time to receive a complete request head; also the HTTP/1.1 keep-alive idle limit.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Drain deadline on shutdown.
    pub shutdown_drain: Duration,
    /// Time between the shutdown signal and the listener's close, served
    /// as usual with `/readyz` at 503 (load balancers take the gateway out).
    pub shutdown_delay: Duration,
    /// Tokio worker threads (`None`: one per CPU).
    pub worker_threads: Option<usize>,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// An upgraded tunnel with no traffic either way is closed after this long.
    pub tunnel_idle_timeout: Duration,
    /// A client that reads nothing of a response for this long is disconnected.
    pub send_timeout: Duration,
    /// Where the admin API listens (`None`: no admin listener).
    pub admin_listen: Option<SocketAddr>,
    /// The STUN/TURN relay, when `[relay]` is configured.
    pub relay: Option<crate::relay::RelayConfig>,
    /// Reload when the config file changes.
    pub reload_on_change: bool,
    /// How often the config file is looked at.
    pub reload_check_interval: Duration,
    /// The listener's certificates, when `[[server.tls]]` is configured
    /// (the listener then speaks only TLS).
    pub tls: Option<std::sync::Arc<crate::tls::CertStore>>,
    /// `[log]`: format and default filter of the process's log.
    pub log: super::log::LogSettings,
}

impl ServerSettings {
    /// Defaults for a listener on `listen`.
    pub fn new(listen: SocketAddr, max_connections: usize) -> Self {
        ServerSettings {
            listen,
            max_connections,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            shutdown_drain: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            worker_threads: None,
            http2_max_concurrent_streams: 256,
            idle_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(60),
            admin_listen: None,
            relay: None,
            reload_on_change: true,
            reload_check_interval: Duration::from_secs(1),
            tls: None,
            log: super::log::LogSettings::default(),
        }
    }
}
