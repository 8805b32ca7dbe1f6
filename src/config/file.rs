//! The TOML file exactly as written: serde structs, unknown keys rejected.
//!
//! Values that later checks may reject are [`Spanned`] so their errors can
//! name the line. Defaults live here, beside the field they belong to, and
//! are documented in `docs/configuration.md`.

use serde::Deserialize;
use toml::Spanned;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`: the client-facing listener.
    #[serde(default)]
    pub server: ServerFile,
    /// `[[services]]`: backend services and their endpoints.
    #[serde(default)]
    pub services: Vec<ServiceFile>,
    /// `[[routes]]`: method + path → service.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// `[auth]`: JWT validation.
    #[serde(default)]
    pub auth: Option<Spanned<AuthFile>>,
    /// `[rate_limit]`: where counters live, fleet-wide rules.
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimitSectionFile>>,
    /// `[admin]`: the admin listener.
    #[serde(default)]
    pub admin: Option<Spanned<AdminFile>>,
    /// Sections of later releases: rejected with "not yet supported" rather than ignored.
    #[serde(default)]
    pub health: Option<Spanned<toml::Value>>,
    /// `[geo]`: client location and region choice.
    #[serde(default)]
    pub geo: Option<Spanned<GeoFile>>,
    /// `[relay]`: the STUN/TURN voice relay.
    #[serde(default)]
    pub relay: Option<Spanned<RelayFile>>,
    /// `[log]`: log format, level, access log.
    #[serde(default)]
    pub log: Option<Spanned<LogFile>>,
}

/// `[log]` (see `docs/configuration.md#log`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogFile {
    /// `"text"` (default) or `"json"`: one JSON object per line.
    pub format: LogFormatFile,
    /// The default filter when `RUST_LOG` is unset (`RUST_LOG` wins). Default `"info"`.
    pub level: Spanned<String>,
    /// One line per request at target `access`. Default true.
    pub access_log: bool,
    /// OTLP/HTTP traces endpoint (`http://host:4318/v1/traces`); needs the
    /// `otel` cargo feature. Default none.
    pub otlp_endpoint: Option<Spanned<String>>,
    /// Whose `traceparent` is continued: `"continue"` (anyone's, default),
    /// `"trusted"` (only from `[server] trusted_proxies`) or `"restart"`
    /// (never: every request starts a trace at the gateway).
    pub incoming_trace: IncomingTraceFile,
}

/// `[log] incoming_trace`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum IncomingTraceFile {
    /// Continue any client's valid trace.
    #[default]
    Continue,
    /// Continue only traces that come through a trusted proxy.
    Trusted,
    /// Start a new trace for every request.
    Restart,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            format: LogFormatFile::Text,
            level: Spanned::new(0..0, "info".to_owned()),
            access_log: true,
            otlp_endpoint: None,
            incoming_trace: IncomingTraceFile::Continue,
        }
    }
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatFile {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".to_owned())
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    /// `ip:port` to listen on. Default `127.0.0.1:8080`.
    pub listen: Spanned<String>,
    /// Open client connections at most; more wait in the accept queue. Default 10000.
    pub max_connections: Spanned<usize>,
    /// CIDRs whose `X-Forwarded-For` is believed. Default none.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Time for a client to send a complete request head (and, on HTTP/1.1,
    /// to start the next request on a kept-alive connection). Default 10000.
    pub header_read_timeout_ms: Spanned<u64>,
    /// Largest request head (request line + headers) in bytes; larger → 431. Default 65536.
    pub max_header_bytes: Spanned<usize>,
    /// Largest request body in bytes, unless a route says otherwise; larger → 413. Default 16 MiB.
    pub max_request_body_bytes: u64,
    /// On SIGTERM/SIGINT, time in-flight requests get to finish. Default 30.
    pub shutdown_drain_seconds: u64,
    /// On SIGTERM/SIGINT, time the gateway keeps accepting and serving as
    /// usual while `/readyz` answers 503, before the listener closes and
    /// the drain begins. Default 0.
    pub shutdown_delay_seconds: Spanned<u64>,
    /// Tokio worker threads. Default: one per CPU.
    pub worker_threads: Option<Spanned<usize>>,
    /// Concurrent streams per HTTP/2 client connection. Default 256.
    pub http2_max_concurrent_streams: u32,
    /// A connection with no request in flight is closed after this long. Default 60000.
    pub idle_timeout_ms: Spanned<u64>,
    /// An upgraded (WebSocket) tunnel with no bytes either way is closed after this long. Default 300000.
    pub tunnel_idle_timeout_ms: Spanned<u64>,
    /// Longest pause between two pieces of a request body before the client gets 408. Default 30000.
    pub client_body_timeout_ms: Spanned<u64>,
    /// A client that reads nothing of a response for this long is disconnected. Default 60000.
    pub send_timeout_ms: Spanned<u64>,
    /// Accept `%2F` and `%5C` (encoded `/` and `\\`) in request paths. Default false: 400.
    pub allow_encoded_slashes: bool,
    /// Reload when the config file changes (SIGHUP and `POST /admin/reload` always work). Default true.
    pub reload_on_change: bool,
    /// How often the file is looked at for a change. Default 1000.
    pub reload_check_interval_ms: Spanned<u64>,
    /// `[[server.tls]]`: certificates; with any, `listen` speaks only TLS.
    pub tls: Vec<ServerTlsFile>,
    /// How often certificate and key files are looked at for changes, s. Default 10.
    pub tls_reload_interval_seconds: Spanned<u64>,
}

/// `[[server.tls]]`: one certificate and the SNI names it serves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFile {
    /// PEM certificate chain, leaf first (relative to the config file's directory).
    pub cert: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
    /// SNI names (exact, or `*.` for one label); the first entry is the default certificate.
    pub server_names: Spanned<Vec<Spanned<String>>>,
}

/// `[services.tls]`: TLS (and mTLS) to the service's endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTlsFile {
    /// Name verified in the upstream's certificate and sent as SNI. Default: the endpoint's IP.
    pub server_name: Option<Spanned<String>>,
    /// PEM trust roots. Default: the webpki (Mozilla) roots.
    pub ca: Option<Spanned<String>>,
    /// PEM client certificate chain (mTLS); needs `key`.
    pub cert: Option<Spanned<String>>,
    /// Its PEM private key; needs `cert`.
    pub key: Option<Spanned<String>>,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: default_listen(),
            max_connections: Spanned::new(0..0, 10_000),
            trusted_proxies: Vec::new(),
            header_read_timeout_ms: Spanned::new(0..0, 10_000),
            max_header_bytes: Spanned::new(0..0, 64 * 1024),
            max_request_body_bytes: 16 * 1024 * 1024,
            shutdown_drain_seconds: 30,
            shutdown_delay_seconds: Spanned::new(0..0, 0),
            worker_threads: None,
            http2_max_concurrent_streams: 256,
            idle_timeout_ms: Spanned::new(0..0, 60_000),
            tunnel_idle_timeout_ms: Spanned::new(0..0, 300_000),
            client_body_timeout_ms: Spanned::new(0..0, 30_000),
            send_timeout_ms: Spanned::new(0..0, 60_000),
            allow_encoded_slashes: false,
            reload_on_change: true,
            reload_check_interval_ms: Spanned::new(0..0, 1000),
            tls: Vec::new(),
            tls_reload_interval_seconds: Spanned::new(0..0, 10),
        }
    }
}

/// The protocol spoken to a service's endpoints.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolFile {
    /// HTTP/1.1 (default).
    #[default]
    Http1,
    /// HTTP/2 cleartext, prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`); needs `[services.tls]`.
    H2,
}

/// How `Host` is sent upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HostFile {
    /// The client's `Host` (default).
    #[default]
    Preserve,
    /// The endpoint's `ip:port`.
    Endpoint,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// `ip:port` of the admin listener. Default `127.0.0.1:9901`.
    #[serde(default = "default_admin_listen")]
    pub listen: Spanned<String>,
    /// Allow a listen address off loopback. Default false.
    #[serde(default)]
    pub allow_remote: bool,
    /// Environment variable holding a bearer token the admin API then
    /// requires (all but `/healthz` and `/readyz`).
    pub token_env: Option<Spanned<String>>,
    /// A file holding that token instead (read again at each reload, so
    /// the token can be rotated without a restart).
    pub token_file: Option<Spanned<String>>,
}

/// `[relay]`: the STUN/TURN voice relay (see `docs/configuration.md#relay`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// `ip:port` of the UDP (and TCP) listener. Default `0.0.0.0:3478`.
    #[serde(default = "default_relay_listen")]
    pub listen: Spanned<String>,
    /// Also serve TURN over TCP on `listen` (RFC 8656 §3.1). Default true.
    #[serde(default = "yes")]
    pub tcp: bool,
    /// The long-term credential realm. Default `aether`.
    #[serde(default = "default_realm")]
    pub realm: Spanned<String>,
    /// The address put in XOR-RELAYED-ADDRESS (the relay's public address). Required.
    pub relay_address: Option<Spanned<String>>,
    /// Where relayed sockets bind, when it differs from `relay_address`
    /// (behind a 1:1 NAT). Default `relay_address`.
    pub relay_bind_address: Option<Spanned<String>>,
    /// An IPv6 relay address beside an IPv4 `relay_address`, for clients
    /// asking for IPv6 relayed addresses. Default none.
    pub relay_address_v6: Option<Spanned<String>>,
    /// Where IPv6 relayed sockets bind. Default `relay_address_v6`.
    pub relay_bind_address_v6: Option<Spanned<String>>,
    /// Relayed ports, `"lo-hi"`. Default `49152-65535`.
    #[serde(default = "default_relay_ports")]
    pub relay_ports: Spanned<String>,
    /// Environment variable with the REST credential secret.
    pub secret_env: Option<Spanned<String>>,
    /// File with the REST credential secret (trailing newline ignored).
    pub secret_file: Option<Spanned<String>>,
    /// The previous secret, still accepted during a rotation (environment).
    pub previous_secret_env: Option<Spanned<String>>,
    /// The previous secret (file).
    pub previous_secret_file: Option<Spanned<String>>,
    /// Lifetime of the credentials the gateway issues, s. Default 600.
    #[serde(default = "default_credential_ttl")]
    pub credential_ttl_seconds: Spanned<u64>,
    /// Cap on what one allocation relays to peers, kbps of voice payload
    /// (0: none). Default 64.
    #[serde(default = "default_bitrate")]
    pub max_bitrate_kbps: Spanned<u32>,
    /// Allocations one user may hold (486 beyond). Default 4.
    #[serde(default = "default_per_user")]
    pub max_allocations_per_user: Spanned<usize>,
    /// Allocations in all (508 beyond). Default 10000.
    #[serde(default = "default_max_allocations")]
    pub max_allocations: Spanned<usize>,
    /// Permissions per allocation (508 beyond). Default 64.
    #[serde(default = "default_per_allocation")]
    pub max_permissions_per_allocation: Spanned<usize>,
    /// Channels per allocation (508 beyond). Default 64.
    #[serde(default = "default_per_allocation")]
    pub max_channels_per_allocation: Spanned<usize>,
    /// Peer ranges allowed although special (loopback, private, …). Default none.
    #[serde(default)]
    pub allowed_peers: Vec<Spanned<String>>,
    /// Static long-term users, for testing.
    #[serde(default)]
    pub users: Vec<RelayUserFile>,
    /// The gateway's own route handing out credentials. Default
    /// `/api/v1/voice/credentials`.
    #[serde(default = "default_credentials_path")]
    pub credentials_path: Spanned<String>,
    /// Roles a token needs for credentials. Default none (any valid token).
    #[serde(default)]
    pub credentials_roles: Vec<Spanned<String>>,
    /// TURN URIs of this relay handed to clients. Default
    /// `turn:<relay_address>:<port>?transport=udp` (and `tcp`).
    #[serde(default)]
    pub uris: Vec<Spanned<String>>,
    /// This relay's region (a `[geo]` region).
    pub region: Option<Spanned<String>>,
    /// Relays of other regions, for clients closer to them.
    #[serde(default)]
    pub regions: Vec<RelayRegionFile>,
    /// Unauthenticated answers (401/438) per source /24 or /56 per second. Default 10.
    #[serde(default = "default_challenges")]
    pub challenges_per_second: Spanned<u32>,
    /// Their burst. Default 20.
    #[serde(default = "default_challenge_burst")]
    pub challenge_burst: Spanned<u32>,
    /// A nonce is stale (438) after this long, s. Default 600.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime_seconds: Spanned<u64>,
    /// Open TCP client connections at most. Default 4096.
    #[serde(default = "default_tcp_connections")]
    pub max_tcp_connections: Spanned<usize>,
    /// Open TCP client connections from one address at most. Default 64.
    #[serde(default = "default_tcp_per_address")]
    pub max_tcp_connections_per_address: Spanned<usize>,
}

/// `[[relay.users]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayUserFile {
    /// The user name.
    pub name: Spanned<String>,
    /// Its password, in the file (testing).
    pub password: Option<Spanned<String>>,
    /// Environment variable holding its password.
    pub password_env: Option<Spanned<String>>,
}

/// `[[relay.regions]]`: another region's relay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayRegionFile {
    /// The region (a `[geo]` region).
    pub name: Spanned<String>,
    /// Its TURN URIs.
    pub uris: Vec<Spanned<String>>,
}

fn default_relay_listen() -> Spanned<String> {
    Spanned::new(0..0, "0.0.0.0:3478".to_owned())
}
fn default_realm() -> Spanned<String> {
    Spanned::new(0..0, "aether".to_owned())
}
fn default_relay_ports() -> Spanned<String> {
    Spanned::new(0..0, "49152-65535".to_owned())
}
fn default_credential_ttl() -> Spanned<u64> {
    Spanned::new(0..0, 600)
}
fn default_bitrate() -> Spanned<u32> {
    Spanned::new(0..0, 64)
}
fn default_per_user() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}
fn default_max_allocations() -> Spanned<usize> {
    Spanned::new(0..0, 10_000)
}
fn default_per_allocation() -> Spanned<usize> {
    Spanned::new(0..0, 64)
}
fn default_credentials_path() -> Spanned<String> {
    Spanned::new(0..0, "/api/v1/voice/credentials".to_owned())
}
fn default_challenges() -> Spanned<u32> {
    Spanned::new(0..0, 10)
}
fn default_challenge_burst() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}
fn default_nonce_lifetime() -> Spanned<u64> {
    Spanned::new(0..0, 600)
}
fn default_tcp_per_address() -> Spanned<usize> {
    Spanned::new(0..0, 64)
}
fn default_tcp_connections() -> Spanned<usize> {
    Spanned::new(0..0, 4096)
}

fn default_admin_listen() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".to_owned())
}

/// Endpoint choice within a service.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalanceFile {
    /// Each endpoint in turn, by weight (default).
    #[default]
    RoundRobin,
    /// The less busy of two random endpoints.
    LeastRequest,
    /// The faster (latency × load) of two random endpoints.
    PeakEwma,
    /// Maglev hashing of `hash_key`.
    ConsistentHash,
}

/// `all_unhealthy = "..."`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AllUnhealthyFile {
    /// Spread requests over every endpoint (default, as Envoy).
    #[default]
    RouteToAll,
    /// Answer 503.
    Fail,
}

/// `[services.health_check]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// `"http"` (default) or `"tcp"`.
    #[serde(default, rename = "type")]
    pub kind: ProbeKindFile,
    /// HTTP path (and query) probed. Default `/health`.
    pub path: Option<Spanned<String>>,
    /// HTTP method. Default GET.
    pub method: Option<Spanned<String>>,
    /// `Host` sent. Default the endpoint's `ip:port`.
    pub host: Option<Spanned<String>>,
    /// Passing statuses, `[low, high]`. Default `[200, 399]`.
    pub expected_status: Option<Spanned<Vec<u16>>>,
    /// The body must contain this.
    pub body_contains: Option<String>,
    /// Seconds between probes. Default 10.
    pub interval_seconds: Option<Spanned<u64>>,
    /// Milliseconds between probes (instead of `interval_seconds`).
    pub interval_ms: Option<Spanned<u64>>,
    /// Probe timeout. Default 3000.
    #[serde(default = "default_probe_timeout")]
    pub timeout_ms: Spanned<u64>,
    /// Failed probes in a row that mark down. Default 3.
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: Spanned<u32>,
    /// Passing probes in a row that mark up. Default 2.
    #[serde(default = "default_healthy")]
    pub healthy_threshold: Spanned<u32>,
    /// Random spread of each interval, percent. Default 10.
    #[serde(default = "default_jitter")]
    pub jitter_percent: Spanned<u8>,
}

fn default_probe_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 3_000)
}
fn default_unhealthy() -> Spanned<u32> {
    Spanned::new(0..0, 3)
}
fn default_healthy() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn default_jitter() -> Spanned<u8> {
    Spanned::new(0..0, 10)
}

/// `type = "..."` of a health check.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKindFile {
    /// An HTTP request.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

/// `[services.outlier_detection]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierFile {
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Failures in a row that eject. Default 5.
    #[serde(default = "default_consecutive")]
    pub consecutive_failures: Spanned<u32>,
    /// First ejection. Default 30000.
    #[serde(default = "default_base_ejection")]
    pub base_ejection_ms: Spanned<u64>,
    /// Longest ejection. Default 300000.
    #[serde(default = "default_max_ejection")]
    pub max_ejection_ms: Spanned<u64>,
    /// Most endpoints ejected at once, percent (at least one). Default 50.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: Spanned<u8>,
}

fn yes() -> bool {
    true
}
fn default_consecutive() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}
fn default_base_ejection() -> Spanned<u64> {
    Spanned::new(0..0, 30_000)
}
fn default_max_ejection() -> Spanned<u64> {
    Spanned::new(0..0, 300_000)
}
fn default_max_ejection_percent() -> Spanned<u8> {
    Spanned::new(0..0, 50)
}

/// `[services.discovery]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryFile {
    /// `"dns"` (the only source so far).
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// The DNS name (`_service._tcp.name` for SRV).
    pub name: Spanned<String>,
    /// Port of A/AAAA endpoints.
    pub port: Option<Spanned<u16>>,
    /// `"address"` (A and AAAA, default), `"a"`, `"aaaa"` or `"srv"`.
    #[serde(default)]
    pub record: Option<Spanned<String>>,
    /// `ip:port` of DNS servers; default the system's `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<Spanned<String>>,
    /// Re-resolve no sooner than this. Default 5000.
    #[serde(default = "default_min_ttl")]
    pub min_ttl_ms: Spanned<u64>,
    /// Re-resolve no later than this. Default 300000.
    #[serde(default = "default_max_ttl")]
    pub max_ttl_ms: Spanned<u64>,
    /// Per query. Default 2000.
    #[serde(default = "default_dns_timeout")]
    pub timeout_ms: Spanned<u64>,
    /// Region of every endpoint found.
    pub region: Option<Spanned<String>>,
}

fn default_min_ttl() -> Spanned<u64> {
    Spanned::new(0..0, 5_000)
}
fn default_max_ttl() -> Spanned<u64> {
    Spanned::new(0..0, 300_000)
}
fn default_dns_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 2_000)
}

/// `[[services]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    /// Unique name routes refer to.
    pub name: Spanned<String>,
    /// `[[services.endpoints]]`.
    #[serde(default)]
    pub endpoints: Vec<EndpointFile>,
    /// `"round_robin"` (default; the only policy so far).
    #[serde(default)]
    pub balance: BalanceFile,
    /// `"http1"` (default) or `"h2c"`.
    #[serde(default)]
    pub protocol: ProtocolFile,
    /// `"preserve"` (default) or `"endpoint"`.
    #[serde(default)]
    pub host: HostFile,
    /// A fixed `Host` for this service; wins over `host`.
    pub host_rewrite: Option<Spanned<String>>,
    /// TCP connect timeout. Default 2000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Idle keep-alive connections kept per endpoint. Default 64.
    #[serde(default = "default_max_idle")]
    pub max_idle_connections_per_endpoint: usize,
    /// Idle connections older than this are not reused. Default 30000.
    #[serde(default = "default_idle_connection_timeout_ms")]
    pub idle_connection_timeout_ms: u64,
    /// What consistent hashing hashes: `param:<name>`, `header:<name>` or `user`.
    pub hash_key: Option<Spanned<String>>,
    /// What requests get when no endpoint is healthy.
    #[serde(default)]
    pub all_unhealthy: AllUnhealthyFile,
    /// Circuit breaker: requests in flight per endpoint at most. Default 1024.
    #[serde(default = "default_max_requests")]
    pub max_requests_per_endpoint: Spanned<u32>,
    /// Retries may add at most this share of the service's load. Default 20.
    #[serde(default = "default_retry_percent")]
    pub retry_budget_percent: Spanned<u32>,
    /// Retries allowed beyond the percentage, as a burst. Default 10.
    #[serde(default = "default_retry_burst")]
    pub retry_budget_burst: Spanned<u32>,
    /// `[services.health_check]`: active probes.
    pub health_check: Option<Spanned<HealthCheckFile>>,
    /// `[services.outlier_detection]`: passive health (on by default).
    pub outlier_detection: Option<Spanned<OutlierFile>>,
    /// `[services.discovery]`: endpoints from DNS instead of `endpoints`.
    pub discovery: Option<Spanned<DiscoveryFile>>,
    /// `[services.tls]`: TLS to the endpoints. Default: cleartext.
    pub tls: Option<Spanned<ServiceTlsFile>>,
}

fn default_max_requests() -> Spanned<u32> {
    Spanned::new(0..0, 1024)
}
fn default_retry_percent() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}
fn default_retry_burst() -> Spanned<u32> {
    Spanned::new(0..0, 10)
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}
fn default_max_idle() -> usize {
    64
}
fn default_idle_connection_timeout_ms() -> u64 {
    30_000
}

/// `[[services.endpoints]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    /// `ip:port`.
    pub address: Spanned<String>,
    /// The region the endpoint runs in.
    pub region: Option<Spanned<String>>,
    /// Relative share of traffic. Default 1.
    pub weight: Option<Spanned<u32>>,
}

/// A route's `rate_limit = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    /// Sustained requests per minute.
    pub requests_per_minute: Spanned<u32>,
    /// What is counted: `user` (default), `ip`, `route`, `header:<name>`, or
    /// several joined with `+`.
    pub key: Option<Spanned<String>>,
    /// Most requests let through at once (default `requests_per_minute`).
    pub burst: Option<Spanned<u32>>,
    /// Routes naming the same bucket share one counter.
    pub bucket: Option<Spanned<String>>,
}

/// `[rate_limit]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSectionFile {
    /// `local` (default) or `redis`.
    #[serde(default = "default_backend")]
    pub backend: Spanned<BackendFile>,
    /// The Redis server (`redis://host:port`), for `backend = "redis"`.
    pub redis_url: Option<Spanned<String>>,
    /// Environment variable holding the Redis URL (when it has a password).
    pub redis_url_env: Option<Spanned<String>>,
    /// What a rule does while Redis fails.
    #[serde(default)]
    pub on_backend_error: OnBackendErrorFile,
    /// Longest wait for Redis per check.
    #[serde(default = "default_redis_timeout")]
    pub redis_timeout_ms: Spanned<u64>,
    /// After a Redis failure, requests skip Redis for this long.
    #[serde(default = "default_redis_retry")]
    pub redis_retry_interval_ms: Spanned<u64>,
    /// Prefix of every Redis key.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: Spanned<String>,
    /// Also send `X-RateLimit-*` headers.
    #[serde(default)]
    pub x_ratelimit_headers: bool,
    /// Keys held per rule in process; beyond it new keys share one counter.
    #[serde(default = "default_max_keys")]
    pub max_keys_per_rule: Spanned<usize>,
    /// IPv6 clients are counted per prefix of this many bits.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: Spanned<u8>,
    /// How often keys whose allowance is whole again are forgotten.
    #[serde(default = "default_sweep")]
    pub sweep_interval_seconds: Spanned<u64>,
    /// `[[rate_limit.rules]]`: limits applied to every route.
    #[serde(default)]
    pub rules: Vec<GlobalRuleFile>,
}

/// `backend = "..."`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendFile {
    /// In process.
    #[default]
    Local,
    /// Shared through Redis.
    Redis,
}

/// `on_backend_error = "..."`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendErrorFile {
    /// Count in process.
    #[default]
    Local,
    /// Let requests through.
    Allow,
    /// Refuse requests.
    Deny,
}

/// `[[rate_limit.rules]]`: a limit on every route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRuleFile {
    /// Names the rule in logs and Redis keys.
    pub name: Spanned<String>,
    /// Sustained requests per minute (or give `window_seconds` + `max_requests`).
    pub requests_per_minute: Option<Spanned<u32>>,
    /// Window length.
    pub window_seconds: Option<Spanned<u64>>,
    /// Requests per window.
    pub max_requests: Option<Spanned<u32>>,
    /// What is counted (default `user`).
    pub key: Option<Spanned<String>>,
    /// Most requests at once (default: the requests per window).
    pub burst: Option<Spanned<u32>>,
}

fn default_ipv6_prefix() -> Spanned<u8> {
    Spanned::new(0..0, 64)
}
fn default_backend() -> Spanned<BackendFile> {
    Spanned::new(0..0, BackendFile::Local)
}
fn default_redis_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}
fn default_redis_retry() -> Spanned<u64> {
    Spanned::new(0..0, 1_000)
}
fn default_key_prefix() -> Spanned<String> {
    Spanned::new(0..0, "aether:rl".to_owned())
}
fn default_max_keys() -> Spanned<usize> {
    Spanned::new(0..0, crate::ratelimit::DEFAULT_MAX_KEYS)
}
fn default_sweep() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}

/// `[[routes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// One method.
    pub method: Option<Spanned<String>>,
    /// Several methods (instead of `method`).
    pub methods: Option<Spanned<Vec<String>>>,
    /// Path template.
    pub path: Spanned<String>,
    /// Name of a `[[services]]` entry.
    pub service: Spanned<String>,
    /// Upstream response-header timeout. Default 30000.
    pub timeout_ms: Option<Spanned<u64>>,
    /// Prefix removed before forwarding.
    pub strip_prefix: Option<Spanned<String>>,
    /// Prefix added before forwarding.
    pub add_prefix: Option<Spanned<String>>,
    /// Body cap for this route (overrides `[server] max_request_body_bytes`).
    pub max_request_body_bytes: Option<u64>,
    /// Per-route rate limit (parsed and carried; enforcement comes with `[rate_limit]`).
    pub rate_limit: Option<Spanned<RateLimitFile>>,
    /// Who may call the route when `[auth]` is configured (default `required`).
    pub auth: Option<Spanned<AuthModeFile>>,
    /// The token must carry one of these roles.
    pub roles: Option<Spanned<Vec<String>>>,
    /// The token must carry all of these scopes.
    pub scopes: Option<Spanned<Vec<String>>>,
    /// Keep the client's `Authorization` header when forwarding (default:
    /// true on public routes, where the gateway did not consume it; else false).
    pub forward_authorization: Option<Spanned<bool>>,
    /// Extra attempts on other endpoints. Default 1.
    pub retries: Option<Spanned<u8>>,
    /// Which failures are retried: `connect_failure`, `reset`,
    /// `gateway_error`, `timeout`. Default the first three.
    pub retry_on: Option<Spanned<Vec<String>>>,
    /// Retry POST and PATCH too. Default false.
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Time for one attempt's response headers.
    pub per_try_timeout_ms: Option<Spanned<u64>>,
    /// Pin the route to this region (with `[geo]`).
    pub region: Option<Spanned<String>>,
    /// `false`: no geo routing on this route (every endpoint of the
    /// service, whatever its region). Default true with `[geo]`.
    pub geo: Option<Spanned<bool>>,
}

/// `[geo]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoFile {
    /// Region of clients nothing else locates.
    pub default_region: Option<Spanned<String>>,
    /// MaxMind-format database (GeoLite2/GeoIP2 Country or City), relative
    /// to the config file's folder.
    pub mmdb: Option<Spanned<String>>,
    /// Header naming the client's region (or country), believed only from
    /// `[server] trusted_proxies`.
    pub region_header: Option<Spanned<String>>,
    /// `[[geo.networks]]`: CIDR → region, the most specific first.
    #[serde(default)]
    pub networks: Vec<GeoNetworkFile>,
    /// `[[geo.countries]]`: ISO country code → region.
    #[serde(default)]
    pub countries: Vec<GeoCountryFile>,
    /// `[[geo.continents]]`: continent code → region.
    #[serde(default)]
    pub continents: Vec<GeoContinentFile>,
    /// `[geo.latency_ms]`: client region → { service region → ms }.
    #[serde(default)]
    pub latency_ms: std::collections::BTreeMap<
        String,
        Spanned<std::collections::BTreeMap<String, Spanned<u32>>>,
    >,
    /// `[geo.default_latency_ms]`: service region → ms, for client regions without a row.
    #[serde(default)]
    pub default_latency_ms: std::collections::BTreeMap<String, Spanned<u32>>,
    /// Latency of pairs the table does not give (same region: 0). Default 1000.
    pub unknown_latency_ms: Option<Spanned<u32>>,
    /// Keep the region in use unless another is better by more than this. Default 20.
    pub hysteresis_ms: Option<Spanned<u32>>,
    /// A region that came back is used again after this long. Default 30.
    pub failback_seconds: Option<Spanned<u64>>,
    /// `"off"` (default), `"cookie"` or `"header"`.
    pub sticky: Option<Spanned<String>>,
    /// The sticky cookie or header name. Default `aether-region` (cookie),
    /// `x-aether-sticky-region` (header).
    pub sticky_name: Option<Spanned<String>>,
    /// GeoIP cache slots. Default 65536.
    pub cache_entries: Option<Spanned<usize>>,
}

/// `[[geo.networks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoNetworkFile {
    /// `198.51.100.0/24` or a single address.
    pub cidr: Spanned<String>,
    /// The region of clients in it.
    pub region: Spanned<String>,
}

/// `[[geo.countries]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoCountryFile {
    /// ISO 3166-1 alpha-2 code.
    pub country: Spanned<String>,
    /// The region of clients in it.
    pub region: Spanned<String>,
}

/// `[[geo.continents]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoContinentFile {
    /// `AF`, `AN`, `AS`, `EU`, `NA`, `OC` or `SA`.
    pub continent: Spanned<String>,
    /// The region of clients on it.
    pub region: Spanned<String>,
}

/// `auth = "..."` on a route.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthModeFile {
    /// No token needed.
    Public,
    /// A valid token needed.
    Required,
    /// A token validated when present.
    Optional,
}

/// `[auth]`: JWT validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `iss` must equal this.
    pub issuer: Spanned<String>,
    /// `aud` must name one of these (no check when empty).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Claims that must be present and non-empty.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Accepted algorithms (default: every supported one the keys allow).
    pub algorithms: Option<Vec<Spanned<String>>>,
    /// Clock-skew allowance for exp/nbf/iat.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// A JWKS document on disk (relative to the config file).
    pub jwks_file: Option<Spanned<String>>,
    /// A JWKS URL, fetched at start and refreshed.
    pub jwks_url: Option<Spanned<String>>,
    /// Shortest refresh interval; also the unknown-kid refetch rate limit.
    #[serde(default = "default_jwks_min")]
    pub jwks_refresh_min_seconds: Spanned<u64>,
    /// Longest time a fetched set is used without refetching.
    #[serde(default = "default_jwks_max")]
    pub jwks_refresh_max_seconds: Spanned<u64>,
    /// Time allowed for one JWKS fetch.
    #[serde(default = "default_jwks_timeout")]
    pub jwks_fetch_timeout_ms: Spanned<u64>,
    /// Further keys: PEM public keys and HMAC secrets.
    #[serde(default)]
    pub keys: Vec<KeyFile>,
    /// Header carrying `sub` upstream.
    #[serde(default = "default_user_header")]
    pub user_header: Spanned<String>,
    /// Header carrying the roles upstream (comma-separated).
    #[serde(default = "default_roles_header")]
    pub roles_header: Spanned<String>,
    /// Claim holding the roles.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Longest token accepted, in bytes.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: Spanned<usize>,
    /// Verified tokens kept in the cache.
    #[serde(default = "default_token_cache_size")]
    pub token_cache_size: Spanned<usize>,
}

fn default_leeway() -> u64 {
    30
}
fn default_jwks_min() -> Spanned<u64> {
    Spanned::new(0..0, 60)
}
fn default_jwks_max() -> Spanned<u64> {
    Spanned::new(0..0, 86_400)
}
fn default_jwks_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 5_000)
}
fn default_user_header() -> Spanned<String> {
    Spanned::new(0..0, "x-aether-user".to_owned())
}
fn default_roles_header() -> Spanned<String> {
    Spanned::new(0..0, "x-aether-roles".to_owned())
}
fn default_roles_claim() -> String {
    "role".to_owned()
}
fn default_max_token_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 8 * 1024)
}
fn default_token_cache_size() -> Spanned<usize> {
    Spanned::new(0..0, 10_000)
}

/// `[[auth.keys]]`: one static key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Key id matched against the token's `kid` (any token when absent).
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub algorithm: Spanned<String>,
    /// A PEM public key file (relative to the config file).
    pub pem_file: Option<Spanned<String>>,
    /// An environment variable holding an HMAC secret.
    pub secret_env: Option<Spanned<String>>,
    /// A file holding an HMAC secret (trailing newline ignored).
    pub secret_file: Option<Spanned<String>>,
}
