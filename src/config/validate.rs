//! From the file's text to validated domain types, every error naming the
//! file, the line and the field.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::file::{AuthModeFile, FileConfig, RouteFile};
use super::reuse::Components;
use super::snapshot::{ServerSettings, Snapshot};
use crate::auth::{AuthMode, RouteAuth};
use crate::dispatch::Dispatcher;
use crate::dispatch::forwarded::TrustedProxies;
use crate::router::{HttpMethod, RateLimitRule, Route, RoutePolicy, Router, ServiceTarget};

/// A configuration error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<built-in>` for the demo config).
    pub file: PathBuf,
    /// 1-based line; 0 when the error is not tied to a place in the file.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the offending field, e.g. `routes[2].service`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        } else {
            write!(f, "{}: ", self.file.display())?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A validated configuration: listener settings and the first snapshot.
#[derive(Debug)]
pub struct GatewayConfig {
    /// Listener settings (fixed for the life of the process).
    pub server: ServerSettings,
    /// Routes, services and per-request settings.
    pub snapshot: Snapshot,
    /// Accepted but worth telling the operator about.
    pub warnings: Vec<String>,
}

pub(super) struct Ctx<'a> {
    pub(super) file: &'a Path,
    text: &'a str,
    /// The clock of every time-based policy the config builds.
    pub(super) clock: Arc<dyn crate::clock::Clock>,
    /// The file as plain TOML values: what reused parts are fingerprinted by.
    pub(super) values: toml::Table,
    /// The running config's parts, on a reload.
    pub(super) prev: Option<&'a Components>,
    /// This build's parts, for the reload after it.
    pub(super) next: std::cell::RefCell<Components>,
}

impl Ctx<'_> {
    /// `key`'s part of the running config when it was built from the same
    /// settings, else `built`; recorded for the next reload either way.
    pub(super) fn reuse<T: std::any::Any + Send + Sync>(
        &self,
        key: String,
        fingerprint: u64,
        built: impl FnOnce() -> Arc<T>,
    ) -> Arc<T> {
        let part = self
            .prev
            .and_then(|p| p.get::<T>(&key, fingerprint))
            .unwrap_or_else(built);
        self.next
            .borrow_mut()
            .insert(key, fingerprint, Arc::clone(&part));
        part
    }

    /// The file's value at `path` (`["services", "2"]`), as plain TOML text.
    pub(super) fn value_text(&self, path: &[&str]) -> String {
        let mut v: Option<&toml::Value> = None;
        let mut table = Some(&self.values);
        for (i, key) in path.iter().enumerate() {
            v = match (i, v) {
                (0, _) => table.and_then(|t| t.get(*key)),
                (_, Some(toml::Value::Array(a))) => {
                    key.parse::<usize>().ok().and_then(|n| a.get(n))
                }
                (_, Some(toml::Value::Table(t))) => t.get(*key),
                _ => None,
            };
            table = None;
        }
        super::reuse::value_text(v)
    }

    pub(super) fn at(
        &self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }

    pub(super) fn spanned<T>(
        &self,
        s: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.at(s.span(), field, message)
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// Read and validate a configuration file.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and field of the first problem.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let text = read_text(path)?;
    parse(&text, path)
}

/// The text of a config file (a regular file, at most
/// [`MAX_CONFIG_BYTES`](super::files::MAX_CONFIG_BYTES), UTF-8).
///
/// # Errors
/// A [`ConfigError`] saying why it cannot be used (with the line of a
/// byte that is not UTF-8).
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    super::files::read_config_text(path).map_err(|(line, column, message)| ConfigError {
        file: path.to_owned(),
        line,
        column,
        field: String::new(),
        message,
    })
}

/// Validate configuration text; `file` is used in error messages.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and field of the first problem.
pub fn parse(text: &str, file: &Path) -> Result<GatewayConfig, ConfigError> {
    parse_with_clock(text, file, Arc::new(crate::clock::SystemClock))
}

/// [`parse`], with the policies it builds (token times, rate limits) on
/// `clock` (tests use a manual clock).
///
/// # Errors
/// A [`ConfigError`] naming the file, line and field of the first problem.
pub fn parse_with_clock(
    text: &str,
    file: &Path,
    clock: Arc<dyn crate::clock::Clock>,
) -> Result<GatewayConfig, ConfigError> {
    parse_reusing(text, file, clock, None)
}

/// [`parse_with_clock`] for a reload: the parts of `running` whose settings
/// are unchanged (services, rate-limit rules, the Redis backend) are taken
/// over instead of rebuilt, so they keep their connections and state.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and field of the first problem.
pub fn parse_reusing(
    text: &str,
    file: &Path,
    clock: Arc<dyn crate::clock::Clock>,
    running: Option<&Components>,
) -> Result<GatewayConfig, ConfigError> {
    let mut cx = Ctx {
        file,
        text,
        clock,
        values: toml::Table::new(),
        prev: running,
        next: std::cell::RefCell::new(Components::default()),
    };
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(&cx, e, String::new()))?;
    let raw: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        // Spanned<T> shows up as an inner private field; the user's path ends before it.
        let path = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        let path = if path == "." { String::new() } else { path };
        toml_error(&cx, e.into_inner(), path)
    })?;
    // Parsed once more as plain values: the fingerprints of reusable parts
    // must not depend on spans (a section moved down a line is unchanged).
    cx.values = toml::from_str(text).map_err(|e| toml_error(&cx, e, String::new()))?;
    if cx.values.is_empty() {
        // Nothing but comments or blanks: never what was meant (a file
        // truncated by a write in progress looks like this).
        return Err(ConfigError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            field: String::new(),
            message: "the file is empty: there is nothing to run (an empty [server] table runs the defaults)".to_owned(),
        });
    }
    let mut cfg = build(&cx, raw)?;
    cfg.snapshot.components = cx.next.into_inner();
    cfg.snapshot.source = Arc::new(cx.values);
    Ok(cfg)
}

fn toml_error(cx: &Ctx<'_>, e: toml::de::Error, field: String) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let (line, column) = line_col(cx.text, span.start);
    ConfigError {
        file: cx.file.to_owned(),
        line,
        column,
        field,
        message: friendly(e.message().trim()),
    }
}

/// serde speaks Rust; operators read TOML. The offending value is left
/// out of the message: it may be a secret typed into the wrong place (the
/// line and field say where it is).
fn friendly(message: &str) -> String {
    let mut m = without_values(message);
    for (rust, toml) in [
        ("expected usize", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected u16", "expected a non-negative integer"),
        ("expected u8", "expected a non-negative integer"),
    ] {
        m = m.replace(rust, toml);
    }
    m
}

/// `invalid type: integer `123`, expected …` → `invalid type: integer, expected …`.
fn without_values(message: &str) -> String {
    if !(message.starts_with("invalid type") || message.starts_with("invalid value")) {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('`') {
        let Some(close) = rest[open + 1..].find('`') else {
            break;
        };
        out.push_str(rest[..open].trim_end());
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    // `string "abc"` values are quoted, not backticked.
    if let Some(at) = out.find(": string \"")
        && let Some(end) = out[at + 10..].find('"')
    {
        out.replace_range(at + 8..at + 10 + end + 1, "");
    }
    out
}

fn build(cx: &Ctx<'_>, raw: FileConfig) -> Result<GatewayConfig, ConfigError> {
    let mut warnings = Vec::new();
    if let Some(h) = &raw.health {
        return Err(cx.spanned(
            h,
            "health",
            "there is no [health] section: health checks are set per service, in [services.health_check]",
        ));
    }
    let log = super::log::build(cx, raw.log.as_ref())?;

    let mut server = build_server(cx, &raw)?;
    if let Some(store) = &server.tls {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        for (i, problem) in store.problems(now) {
            let cert = raw.server.tls[i].cert.get_ref();
            warnings.push(format!("server.tls[{i}] ({cert}): {problem}"));
        }
    }
    let admin_token = match &raw.admin {
        Some(a) => super::upstream::admin_token(cx, a, &mut warnings)?,
        None => None,
    };
    server.log = log.clone();
    let (auth, identity_headers) = match &raw.auth {
        Some(a) => {
            let (mw, headers) = super::auth::build(cx, a, &mut warnings)?;
            (Some(super::auth::shared(mw)), headers)
        }
        None => (None, super::auth::IdentityHeaders::default()),
    };
    let geo = match &raw.geo {
        Some(g) => Some(Arc::new(super::geo::build(cx, &raw, g, &mut warnings)?)),
        None => None,
    };
    let mut dispatcher = Dispatcher::new();
    let mut known: HashMap<&str, ()> = HashMap::new();
    for (i, svc) in raw.services.iter().enumerate() {
        if known.insert(svc.name.get_ref().as_str(), ()).is_some() {
            return Err(cx.spanned(
                &svc.name,
                format!("services[{i}].name"),
                format!("duplicate service name {:?}", svc.name.get_ref()),
            ));
        }
        let mut service = super::upstream::build_service(cx, i, svc, &mut warnings)?;
        if let Some(g) = &geo {
            let regions = super::geo::service_regions(&raw, svc.name.get_ref());
            // Endpoints without a region form a group of their own.
            let unregioned = svc.endpoints.iter().any(|e| e.region.is_none())
                || svc
                    .discovery
                    .as_ref()
                    .is_some_and(|d| d.get_ref().region.is_none());
            if !regions.is_empty() && unregioned {
                warnings.push(format!(
                    "services[{i}] ({}): some endpoints have no region: with [geo] they get requests only when no region can serve",
                    svc.name.get_ref()
                ));
            }
            if regions.len() + usize::from(unregioned) > crate::geo::MAX_SERVICE_REGIONS {
                return Err(cx.spanned(
                    &svc.name,
                    format!("services[{i}]"),
                    format!(
                        "endpoints in {} regions{}: geo routing takes at most {} per service",
                        regions.len(),
                        if unregioned {
                            " and some without one"
                        } else {
                            ""
                        },
                        crate::geo::MAX_SERVICE_REGIONS
                    ),
                ));
            }
            service = service.with_geo(Arc::clone(g));
        }
        // Built (and so validated) either way; an unchanged one is taken
        // over from the running config with its pools, health and tasks.
        // The TLS files' contents too: a rotated client certificate or CA
        // behind the same path is a changed service.
        let tls_files: Vec<Option<Vec<u8>>> = service
            .pool_config()
            .tls
            .iter()
            .flat_map(|t| {
                let s = t.source();
                [s.ca.clone(), s.cert.clone(), s.key.clone()]
            })
            .flatten()
            .map(|p| super::files::read_capped(&p, super::files::MAX_PEM_BYTES).ok())
            .collect();
        let fp = super::reuse::fingerprint(&(
            cx.value_text(&["services", &i.to_string()]),
            cx.value_text(&["geo"]),
            tls_files,
        ));
        let key = format!("service:{}", svc.name.get_ref());
        let running = cx
            .prev
            .and_then(|p| p.get_any::<crate::upstream::Service>(&key));
        let service = cx.reuse(key, fp, || {
            let service = Arc::new(service);
            if let Some(running) = running {
                service.inherit(&running);
            }
            service
        });
        dispatcher.insert_service(service);
    }

    let relay = match &raw.relay {
        Some(r) => Some(super::relay::build(
            cx,
            r,
            auth.is_some(),
            geo.as_deref(),
            &mut warnings,
        )?),
        None => None,
    };

    let mut limits = super::ratelimit::Builder::new(cx, raw.rate_limit.as_ref(), &mut warnings)?;
    let mut router = Router::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let env = RouteEnv {
            raw: &raw,
            services: &known,
            dispatcher: &dispatcher,
            auth_configured: auth.is_some(),
            geo: geo.as_ref(),
        };
        add_routes(cx, i, r, &env, &mut limits, &mut router, &mut warnings)?;
    }
    if raw.routes.is_empty() && relay.is_none() {
        warnings.push("no [[routes]]: every request will get 404".to_owned());
    }
    let mut voice = None;
    if let Some(built) = relay {
        if let Some(issuer) = built.credentials {
            add_credentials_route(cx, &raw, &built.path, built.roles, &mut router)?;
            voice = Some(Arc::new(issuer));
        }
        let r = &built.relay;
        if r.listen.port() != 0
            && [Some(server.listen), server.admin_listen]
                .into_iter()
                .flatten()
                .any(|l| {
                    l.port() == r.listen.port()
                        && (l.ip() == r.listen.ip()
                            || l.ip().is_unspecified()
                            || r.listen.ip().is_unspecified())
                })
            && r.tcp
        {
            return Err(cx.spanned(
                &raw.relay.as_ref().expect("built from it").get_ref().listen,
                "relay.listen",
                format!(
                    "{} is taken by another listener: the relay's TCP needs its own port",
                    r.listen
                ),
            ));
        }
        server.relay = Some(built.relay);
    }

    let trusted = raw
        .server
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, s)| {
            parse_cidr(s.get_ref()).ok_or_else(|| {
                cx.spanned(
                    s,
                    format!("server.trusted_proxies[{i}]"),
                    format!("{:?} is not a CIDR or IP address", s.get_ref()),
                )
            })
        })
        .collect::<Result<Vec<IpNet>, _>>()?;

    let (rate_limits, limit_warnings) = limits.finish();
    warnings.extend(limit_warnings);
    Ok(GatewayConfig {
        server,
        snapshot: Snapshot {
            router,
            dispatcher,
            trusted_proxies: TrustedProxies::new(trusted),
            max_request_body_bytes: raw.server.max_request_body_bytes,
            client_body_timeout: Duration::from_millis(
                *raw.server.client_body_timeout_ms.get_ref(),
            ),
            path_options: crate::router::PathOptions {
                allow_encoded_slashes: raw.server.allow_encoded_slashes,
            },
            auth,
            identity_headers,
            rate_limits,
            geo,
            voice,
            components: super::reuse::Components::default(),
            admin_token,
            source: Arc::default(),
            access_log: log.access_log,
            incoming_trace: log.incoming_trace,
        },
        warnings,
    })
}

/// The gateway's own `POST <credentials_path>`: a token is always needed.
fn add_credentials_route(
    cx: &Ctx<'_>,
    raw: &FileConfig,
    path: &Spanned<String>,
    roles: Vec<String>,
    router: &mut Router,
) -> Result<(), ConfigError> {
    let route = Route {
        method: HttpMethod::Post,
        path: path.get_ref().clone(),
        target: ServiceTarget::Named("aether-gateway".to_owned()),
        rate_limit: None,
    };
    let policy = RoutePolicy {
        auth: RouteAuth {
            mode: AuthMode::Required,
            roles,
            scopes: Vec::new(),
            forward_authorization: false,
        },
        name: Arc::from(format!("POST {}", path.get_ref())),
        internal: Some(crate::router::Internal::VoiceCredentials),
        ..RoutePolicy::default()
    };
    router.try_add_route(route, policy).map_err(|e| {
        let why = format!(
            "{e}: the gateway serves POST {} itself ([relay] credentials_path, with [auth]); move one of them",
            path.get_ref()
        );
        // Point at the route that collides when it is the user's: the
        // default credentials path has no place in the file.
        let clash = raw
            .routes
            .iter()
            .position(|r| r.path.get_ref() == path.get_ref());
        match clash {
            Some(i) if path.span().is_empty() => {
                cx.spanned(&raw.routes[i].path, format!("routes[{i}].path"), why)
            }
            _ => cx.spanned(path, "relay.credentials_path", why),
        }
    })?;
    Ok(())
}

/// A route's auth settings; without `[auth]` only `auth = "public"` is allowed.
fn route_auth(
    cx: &Ctx<'_>,
    i: usize,
    r: &RouteFile,
    auth_configured: bool,
) -> Result<RouteAuth, ConfigError> {
    let field = |f: &str| format!("routes[{i}].{f}");
    let mode = r.auth.as_ref().map(|m| *m.get_ref());
    if !auth_configured {
        let needs = |f: &str, span| cx.at(span, field(f), "needs an [auth] section");
        if let Some(m) = &r.auth
            && *m.get_ref() != AuthModeFile::Public
        {
            return Err(needs("auth", m.span()));
        }
        if let Some(x) = &r.roles {
            return Err(needs("roles", x.span()));
        }
        if let Some(x) = &r.scopes {
            return Err(needs("scopes", x.span()));
        }
    }
    let mode = match mode {
        Some(AuthModeFile::Public) => AuthMode::Public,
        Some(AuthModeFile::Optional) => AuthMode::Optional,
        Some(AuthModeFile::Required) => AuthMode::Required,
        None if auth_configured => AuthMode::Required,
        None => AuthMode::Public,
    };
    let roles = r
        .roles
        .as_ref()
        .map(|x| x.get_ref().clone())
        .unwrap_or_default();
    let scopes = r
        .scopes
        .as_ref()
        .map(|x| x.get_ref().clone())
        .unwrap_or_default();
    // Roles and scopes need a token: on a public route they would never be
    // checked, and on an optional one an anonymous caller would get past
    // what a token holder without the role cannot.
    if mode != AuthMode::Required {
        let which = match mode {
            AuthMode::Public => "a public",
            _ => "an optional",
        };
        for (name, x) in [("roles", &r.roles), ("scopes", &r.scopes)] {
            if let Some(x) = x {
                return Err(cx.spanned(
                    x,
                    field(name),
                    format!("{which} route cannot require {name} (they need auth = \"required\")"),
                ));
            }
        }
    }
    Ok(RouteAuth {
        mode,
        roles,
        scopes,
        // Kept by default only where the gateway did not consume it.
        forward_authorization: r
            .forward_authorization
            .as_ref()
            .map_or(mode == AuthMode::Public, |f| *f.get_ref()),
    })
}

/// How an error names the environment variable a `*_env` field gave: the
/// name as written when it looks like one (letters, digits, `_`), else a
/// placeholder, because a value that is not a name is most likely the
/// secret itself, typed where its variable's name belongs.
pub(super) fn env_name_shown(name: &str) -> String {
    // Upper case, as variable names are written: a hex or base64 token
    // typed here is mixed or lower case, and is not echoed.
    let is_name = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if is_name {
        name.to_owned()
    } else {
        "(not shown: the value is not an upper-case variable name such as AETHER_SECRET, and may be the secret itself)".to_owned()
    }
}

/// How an error names the file a secret's `*_file` field gave: as
/// written, unless the value looks like a secret typed where its file's
/// path belongs (16 or more characters with neither `/` nor `.`).
pub(super) fn secret_path_shown(written: &str, resolved: &std::path::Path) -> String {
    if written.len() >= 16 && !written.contains(['/', '.']) {
        "(not shown: the value looks like a secret, not a file path)".to_owned()
    } else {
        resolved.display().to_string()
    }
}

/// A URL as an error quotes it: its secrets redacted (userinfo, secret
/// query parameters; see `admin::redact_url`).
pub(super) fn url_shown(url: &str) -> String {
    format!(
        "{:?}",
        crate::admin::redact_url(url).unwrap_or_else(|| url.to_owned())
    )
}

pub(super) fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn build_server(cx: &Ctx<'_>, raw: &FileConfig) -> Result<ServerSettings, ConfigError> {
    let s = &raw.server;
    let listen: SocketAddr = s.listen.get_ref().parse().map_err(|_| {
        cx.spanned(
            &s.listen,
            "server.listen",
            format!(
                "{:?} is not an ip:port address (e.g. \"127.0.0.1:8080\")",
                s.listen.get_ref()
            ),
        )
    })?;
    if *s.max_connections.get_ref() == 0 {
        return Err(cx.spanned(
            &s.max_connections,
            "server.max_connections",
            "must be at least 1",
        ));
    }
    if *s.header_read_timeout_ms.get_ref() == 0 {
        return Err(cx.spanned(
            &s.header_read_timeout_ms,
            "server.header_read_timeout_ms",
            "must be at least 1",
        ));
    }
    if *s.max_header_bytes.get_ref() < 8192 {
        return Err(cx.spanned(
            &s.max_header_bytes,
            "server.max_header_bytes",
            "must be at least 8192 (hyper's smallest read buffer)",
        ));
    }
    for (name, v) in [
        ("server.idle_timeout_ms", &s.idle_timeout_ms),
        ("server.tunnel_idle_timeout_ms", &s.tunnel_idle_timeout_ms),
        ("server.client_body_timeout_ms", &s.client_body_timeout_ms),
        ("server.send_timeout_ms", &s.send_timeout_ms),
    ] {
        if *v.get_ref() == 0 {
            return Err(cx.spanned(v, name, "must be at least 1"));
        }
    }
    if let Some(w) = &s.worker_threads
        && *w.get_ref() == 0
    {
        return Err(cx.spanned(w, "server.worker_threads", "must be at least 1"));
    }
    if *s.shutdown_delay_seconds.get_ref() > 3600 {
        return Err(cx.spanned(
            &s.shutdown_delay_seconds,
            "server.shutdown_delay_seconds",
            "must be at most 3600 (an hour): it is how long load balancers get to notice /readyz's 503",
        ));
    }
    if !(100..=3_600_000).contains(s.reload_check_interval_ms.get_ref()) {
        return Err(cx.spanned(
            &s.reload_check_interval_ms,
            "server.reload_check_interval_ms",
            "must be 100 to 3600000 (1 hour)",
        ));
    }
    Ok(ServerSettings {
        listen,
        max_connections: *s.max_connections.get_ref(),
        header_read_timeout: Duration::from_millis(*s.header_read_timeout_ms.get_ref()),
        max_header_bytes: *s.max_header_bytes.get_ref(),
        shutdown_drain: Duration::from_secs(s.shutdown_drain_seconds),
        shutdown_delay: Duration::from_secs(*s.shutdown_delay_seconds.get_ref()),
        worker_threads: s.worker_threads.as_ref().map(|w| *w.get_ref()),
        http2_max_concurrent_streams: s.http2_max_concurrent_streams,
        idle_timeout: Duration::from_millis(*s.idle_timeout_ms.get_ref()),
        tunnel_idle_timeout: Duration::from_millis(*s.tunnel_idle_timeout_ms.get_ref()),
        send_timeout: Duration::from_millis(*s.send_timeout_ms.get_ref()),
        admin_listen: match &raw.admin {
            Some(a) => {
                let admin = super::upstream::admin_listen(cx, a)?;
                let same_port = admin.port() != 0 && admin.port() == listen.port();
                let same_ip = admin.ip() == listen.ip()
                    || admin.ip().is_unspecified()
                    || listen.ip().is_unspecified();
                if same_port && same_ip {
                    return Err(cx.spanned(
                        &a.get_ref().listen,
                        "admin.listen",
                        format!(
                            "{admin} is also [server] listen: the admin API needs its own port"
                        ),
                    ));
                }
                Some(admin)
            }
            None => None,
        },
        relay: None,
        reload_on_change: s.reload_on_change,
        reload_check_interval: Duration::from_millis(*s.reload_check_interval_ms.get_ref()),
        tls: super::tls::server(cx, s)?,
        log: Default::default(),
    })
}

/// What every route is checked against.
struct RouteEnv<'a> {
    raw: &'a FileConfig,
    services: &'a HashMap<&'a str, ()>,
    dispatcher: &'a Dispatcher,
    auth_configured: bool,
    geo: Option<&'a Arc<crate::geo::GeoRoutingPolicy>>,
}

fn add_routes(
    cx: &Ctx<'_>,
    i: usize,
    r: &RouteFile,
    env: &RouteEnv<'_>,
    limits: &mut super::ratelimit::Builder,
    router: &mut Router,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let RouteEnv {
        raw,
        services,
        dispatcher,
        auth_configured,
        geo,
    } = *env;
    let all_routes = &raw.routes;
    let field = |f: &str| format!("routes[{i}].{f}");
    let methods: Vec<(String, std::ops::Range<usize>)> = match (&r.method, &r.methods) {
        (Some(m), None) => vec![(m.get_ref().clone(), m.span())],
        (None, Some(ms)) if !ms.get_ref().is_empty() => ms
            .get_ref()
            .iter()
            .map(|m| (m.clone(), ms.span()))
            .collect(),
        (None, Some(ms)) => {
            return Err(cx.spanned(ms, field("methods"), "must list at least one method"));
        }
        (Some(m), Some(_)) => {
            return Err(cx.spanned(
                m,
                field("method"),
                "give either `method` or `methods`, not both",
            ));
        }
        (None, None) => {
            return Err(cx.spanned(&r.path, field("method"), "missing `method` (or `methods`)"));
        }
    };
    let service = r.service.get_ref();
    if !services.contains_key(service.as_str()) {
        let mut names: Vec<&str> = services.keys().copied().collect();
        names.sort_unstable();
        return Err(cx.spanned(
            &r.service,
            field("service"),
            format!(
                "unknown service {service:?} (defined: {})",
                names.join(", ")
            ),
        ));
    }
    let route_auth = route_auth(cx, i, r, auth_configured)?;
    // The same name on every gateway of a fleet with this config, so Redis
    // counters are shared: the methods and the path.
    let route_name = {
        let names: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
        format!("{} {}", names.join(","), r.path.get_ref())
    };
    if let Some(rl) = &r.rate_limit
        && !auth_configured
        && rl
            .get_ref()
            .key
            .as_ref()
            .is_none_or(|k| k.get_ref().contains("user"))
    {
        limits.warn(format!(
            "routes[{i}].rate_limit counts by user, but there is no [auth]: every request counts by client address"
        ));
    }
    let policy = RoutePolicy {
        timeout: r
            .timeout_ms
            .as_ref()
            .map_or(RoutePolicy::default().timeout, |t| {
                Duration::from_millis(*t.get_ref())
            }),
        strip_prefix: r.strip_prefix.as_ref().map(|s| s.get_ref().clone()),
        add_prefix: r.add_prefix.as_ref().map(|s| s.get_ref().clone()),
        max_request_body_bytes: r.max_request_body_bytes,
        auth: route_auth,
        rate_limit: match &r.rate_limit {
            None => None,
            Some(rl) => Some(limits.route_rule(cx, i, &route_name, rl)?),
        },
        name: Arc::from(route_name.as_str()),
        retry: super::upstream::route_retry(cx, i, r)?,
        hash_key: dispatcher
            .service(&ServiceTarget::from_name(service))
            .and_then(|s| s.policy().hash_key.clone()),
        geo: super::geo::route_geo(cx, i, r, geo, &super::geo::service_regions(raw, service))?,
        internal: None,
    };
    if policy.hash_key.is_some()
        && policy.geo == crate::router::RouteGeo::Nearest
        && geo.is_some()
        && super::geo::service_regions(raw, service).len() > 1
    {
        warnings.push(format!(
            "routes[{i}] ({}): its service hashes requests to endpoints, but geo routing chooses the region per client first: one key can land on different endpoints for clients in different regions (pin the route with region = \"...\" or set geo = false to keep one key on one endpoint)",
            r.path.get_ref()
        ));
    }
    if policy.hash_key == Some(crate::upstream::HashKey::User) && !auth_configured {
        warnings.push(format!(
            "routes[{i}] ({}): its service hashes by user, but there is no [auth]: its requests are spread round robin",
            r.path.get_ref()
        ));
    }
    if let Some(t) = policy.retry.per_try_timeout
        && t >= policy.timeout
    {
        warnings.push(format!(
            "routes[{i}] ({}): per_try_timeout_ms is not below timeout_ms, so no attempt can be retried after it",
            r.path.get_ref()
        ));
    }
    if let Some(crate::upstream::HashKey::Param(p)) = &policy.hash_key
        && !r.path.get_ref().contains(&format!("{{{p}}}"))
        && !r.path.get_ref().contains(&format!("{{*{p}}}"))
    {
        warnings.push(format!(
            "routes[{i}] ({}) has no {{{p}}} parameter for its service's hash_key: its requests are spread round robin",
            r.path.get_ref()
        ));
    }
    if let Some(t) = &r.timeout_ms
        && *t.get_ref() == 0
    {
        return Err(cx.spanned(t, field("timeout_ms"), "must be at least 1"));
    }
    for (name, span) in methods {
        let method = HttpMethod::from_name(&name).ok_or_else(|| {
            cx.at(
                span.clone(),
                field("method"),
                format!(
                    "unknown method {name:?} (one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS)"
                ),
            )
        })?;
        let route = Route {
            method,
            path: r.path.get_ref().clone(),
            target: ServiceTarget::from_name(service),
            rate_limit: r.rate_limit.as_ref().map(|rl| RateLimitRule {
                requests_per_minute: *rl.get_ref().requests_per_minute.get_ref(),
            }),
        };
        router.try_add_route(route, policy.clone()).map_err(|e| {
            use crate::router::RouteError;
            match e {
                RouteError::InvalidPrefix(ref p) => {
                    let (name, value) = match &r.strip_prefix {
                        Some(s) if s.get_ref() == p => ("strip_prefix", s),
                        _ => (
                            "add_prefix",
                            r.add_prefix
                                .as_ref()
                                .expect("the prefix came from this route"),
                        ),
                    };
                    cx.spanned(value, field(name), e.to_string())
                }
                RouteError::Conflict { ref with, .. } => {
                    let first = all_routes.iter().position(|o| o.path.get_ref() == with);
                    let at = first.map_or(String::new(), |j| format!(" (routes[{j}])"));
                    cx.spanned(&r.path, field("path"), format!("{e}{at}"))
                }
                other => cx.spanned(&r.path, field("path"), other.to_string()),
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        parse(text, Path::new("gw.toml")).expect_err("config should be rejected")
    }

    const SERVICE: &str = "[[services]]\nname = \"world-service\"\n[[services.endpoints]]\naddress = \"127.0.0.1:9001\"\n";

    #[test]
    fn contract_example_parses() {
        let text = r#"
[server]
listen = "127.0.0.1:8080"
max_connections = 10000
trusted_proxies = ["10.0.0.0/8"]

[[services]]
name = "world-service"
[[services.endpoints]]
address = "127.0.0.1:9001"
region = "us-east"

[[routes]]
method = "GET"
path = "/api/v1/worlds/{world_id}"
service = "world-service"

[[routes]]
methods = ["PUT", "DELETE"]
path = "/api/v1/worlds/{world_id}"
service = "world-service"
"#;
        let cfg = parse(text, Path::new("gw.toml")).unwrap();
        assert_eq!(cfg.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.server.max_connections, 10000);
        assert_eq!(cfg.snapshot.router.routes().len(), 3);
        assert!(
            cfg.snapshot
                .trusted_proxies
                .contains("10.1.2.3".parse().unwrap())
        );
    }

    #[test]
    fn unknown_field_names_line_and_path() {
        let e = err(&format!(
            "{SERVICE}\n[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"world-service\"\ntimeout = 5\n"
        ));
        assert_eq!((e.line, e.field.as_str()), (10, "routes[0].timeout"));
        assert!(e.message.contains("unknown field `timeout`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("gw.toml:10:1: routes[0].timeout: unknown field `timeout`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_service() {
        let e = err(&format!(
            "{SERVICE}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"wrold-service\"\n"
        ));
        assert_eq!((e.line, e.column), (8, 11));
        assert_eq!(e.field, "routes[0].service");
        assert_eq!(
            e.message,
            "unknown service \"wrold-service\" (defined: world-service)"
        );
    }

    #[test]
    fn invalid_listen() {
        let e = err("[server]\nlisten = \"localhost:80x\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "server.listen"));
    }

    #[test]
    fn duplicate_route() {
        let route =
            "[[routes]]\nmethod = \"GET\"\npath = \"/a/{id}\"\nservice = \"world-service\"\n";
        let e = err(&format!("{SERVICE}{route}{route}"));
        assert_eq!((e.line, e.field.as_str()), (11, "routes[1].path"));
        assert_eq!(e.message, "duplicate route: GET /a/{id} is already defined");
    }

    #[test]
    fn conflicting_template_and_bad_method() {
        let a = "[[routes]]\nmethod = \"GET\"\npath = \"/a/{id}\"\nservice = \"world-service\"\n";
        let b =
            "[[routes]]\nmethod = \"PUT\"\npath = \"/a/{other}\"\nservice = \"world-service\"\n";
        let e = err(&format!("{SERVICE}{a}{b}"));
        assert_eq!((e.line, e.field.as_str()), (11, "routes[1].path"));
        assert_eq!(
            e.message,
            "path template \"/a/{other}\" conflicts with \"/a/{id}\": a path may match only one template, whatever the method (routes[0])"
        );
        let e = err(&format!(
            "{SERVICE}[[routes]]\nmethod = \"FETCH\"\npath = \"/a\"\nservice = \"world-service\"\n"
        ));
        assert_eq!((e.line, e.field.as_str()), (6, "routes[0].method"));
    }

    #[test]
    fn bad_endpoint_cidr_and_type() {
        let e = err(
            "[[services]]\nname = \"s\"\n[[services.endpoints]]\naddress = \"world.internal:80\"\n",
        );
        assert_eq!(
            (e.line, e.field.as_str()),
            (4, "services[0].endpoints[0].address")
        );
        let e = err("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n");
        assert_eq!((e.line, e.field.as_str()), (2, "server.trusted_proxies[0]"));
        let e = err("[server]\nmax_connections = \"many\"\n");
        assert_eq!(
            e.message,
            "invalid type: string, expected a non-negative integer"
        );
        assert_eq!((e.line, e.field.as_str()), (2, "server.max_connections"));
        let e = err("[server\n");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn errors_never_quote_a_secret() {
        // A URL's password and signature, in a URL that does not parse.
        let e = err(
            "[auth]\nissuer = \"i\"\naudiences = [\"a\"]\njwks_url = \"https://gw:hunter2@idp.example/j son?X-Amz-Signature=SIG0123\"\n",
        );
        assert_eq!((e.line, e.field.as_str()), (4, "auth.jwks_url"));
        let shown = e.to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("SIG0123"),
            "{shown}"
        );
        assert!(shown.contains("gw:<redacted>@idp.example"), "{shown}");
        // A secret typed where the variable's name belongs.
        let e = err(
            "[auth]\nissuer = \"i\"\naudiences = [\"a\"]\n[[auth.keys]]\nkid = \"k\"\nalgorithm = \"HS256\"\nsecret_env = \"hmac-SECRET-0123/xyz\"\n",
        );
        let shown = e.to_string();
        assert!(!shown.contains("SECRET-0123"), "{shown}");
        assert!(shown.contains("not shown"), "{shown}");
        // A hex token (lower case, a letter first) is no variable name either.
        let e = err(
            "[auth]\nissuer = \"i\"\naudiences = [\"a\"]\n[[auth.keys]]\nkid = \"k\"\nalgorithm = \"HS256\"\nsecret_env = \"f3a9c2e1d4b5a6978877665544332211\"\n",
        );
        assert!(!e.to_string().contains("f3a9c2e1d4b5"), "{e}");
        // A secret typed where its file's path belongs.
        let e = err(
            "[auth]\nissuer = \"i\"\naudiences = [\"a\"]\n[[auth.keys]]\nkid = \"k\"\nalgorithm = \"HS256\"\nsecret_file = \"Zm9vYmFyYmF6cXV4MTIzNDU2\"\n",
        );
        assert!(!e.to_string().contains("Zm9vYmFyYmF6"), "{e}");
        assert!(e.to_string().contains("looks like a secret"), "{e}");
        let e = err("[admin]\ntoken_file = \"0123456789abcdef0123456789abcdef\"\n");
        assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
        // A real variable name is named.
        let e = err(
            "[auth]\nissuer = \"i\"\naudiences = [\"a\"]\n[[auth.keys]]\nkid = \"k\"\nalgorithm = \"HS256\"\nsecret_env = \"AETHER_TEST_UNSET_SECRET\"\n",
        );
        assert!(
            e.to_string()
                .contains("environment variable AETHER_TEST_UNSET_SECRET is not set"),
            "{e}"
        );
    }

    #[test]
    fn log_errors_name_line_and_field() {
        let e = err("[log]\nformat = \"xml\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "log.format"));
        assert!(e.message.contains("unknown variant `xml`"), "{e}");
        let e = err("[log]\nformat = \"json\"\nacces_log = true\n");
        assert_eq!((e.line, e.field.as_str()), (3, "log.acces_log"));
        assert!(e.message.contains("unknown field `acces_log`"), "{e}");
        let e = err("[log]\nlevel = \"info,=[\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "log.level"));
        // A misspelt level would silence everything: refused.
        let e = err("[log]\nformat = \"json\"\nlevel = \"inof\"\n");
        assert_eq!((e.line, e.field.as_str()), (3, "log.level"));
        assert!(
            e.message.contains("\"inof\" is not a level"),
            "{}",
            e.message
        );
        let e = err("[log]\nlevel = \"warn,aether_gateway\"\n");
        assert!(e.message.contains("aether_gateway=debug"), "{}", e.message);
        assert!(
            err("[log]\nlevel = \"inof\"\n")
                .message
                .contains("did you mean \"info\"")
        );
        assert!(
            err("[log]\nlevel = \"warning\"\n")
                .message
                .contains("did you mean \"warn\"")
        );
        let e = err("[log]\nlevel = \"\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "log.level"));
        assert!(e.message.starts_with("is empty"), "{}", e.message);
        // RUST_LOG: a misspelt level is caught, targets are not.
        use super::super::log::rust_log_typo;
        assert!(
            rust_log_typo("inof")
                .unwrap()
                .contains("did you mean \"info\"")
        );
        assert!(rust_log_typo("info,warning").is_some());
        for fine in [
            "info",
            "aether_gateway",
            "hyper",
            "warn,access=off",
            "aether_gateway::relay=debug",
            "[span]=debug",
        ] {
            assert_eq!(rust_log_typo(fine), None, "{fine}");
        }
        let e = err("[log]\naccess_log = \"yes\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "log.access_log"));
        let e = err("[log]\notlp_endpoint = \"udp://x\"\n");
        assert_eq!((e.line, e.field.as_str()), (2, "log.otlp_endpoint"));
        if cfg!(feature = "otel") {
            assert!(e.message.contains("not an http:// URL"), "{e}");
        } else {
            assert!(e.message.contains("cargo feature `otel`"), "{e}");
        }
    }

    const SVC: &str = "[[services]]\nname = \"w\"\n";

    #[test]
    fn auth_errors_name_line_and_field() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "[auth]\nissuer = \"a\"\nalgorithms = [\"RS256\", \"none\"]\njwks_url = \"https://a/j\"\n",
                3,
                "auth.algorithms[1]",
                "never accepted",
            ),
            (
                "[auth]\nissuer = \"a\"\nalgorithms = [\"ES512\"]\njwks_url = \"https://a/j\"\n",
                3,
                "auth.algorithms[0]",
                "unsupported algorithm",
            ),
            ("[auth]\nissuer = \"a\"\n", 1, "auth", "no keys"),
            (
                "[auth]\nissuer = \"a\"\njwks_file = \"/nonexistent/jwks.json\"\n",
                3,
                "auth.jwks_file",
                "cannot read",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"ftp://a/j\"\n",
                3,
                "auth.jwks_url",
                "http:// or https://",
            ),
            (
                "[auth]\nissuer = \"a\"\n[[auth.keys]]\nalgorithm = \"HS256\"\nsecret_env = \"AETHER_TEST_SURELY_UNSET_VAR\"\n",
                5,
                "auth.keys[0].secret_env",
                "is not set",
            ),
            (
                "[auth]\nissuer = \"a\"\n[[auth.keys]]\nalgorithm = \"RS256\"\n",
                4,
                "auth.keys[0]",
                "exactly one of",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nuser_header = \"x-forwarded-for\"\n",
                4,
                "auth.user_header",
                "manages itself",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nroles_header = \"traceparent\"\n",
                4,
                "auth.roles_header",
                "manages itself",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nbogus = 1\n",
                4,
                "auth.bogus",
                "unknown field",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nuser_header = \"x-who\"\nroles_header = \"X-Who\"\n",
                5,
                "auth.roles_header",
                "already user_header",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\njwks_fetch_timeout_ms = 0\n",
                4,
                "auth.jwks_fetch_timeout_ms",
                "at least 1",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\ntoken_cache_size = 0\n",
                4,
                "auth.token_cache_size",
                "at least 1",
            ),
            (
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\nmax_token_bytes = 10\n",
                4,
                "auth.max_token_bytes",
                "at least 64",
            ),
        ];
        for (text, line, field, msg) in cases {
            let e = err(text);
            assert_eq!((e.line, e.field.as_str()), (*line, *field), "{text}: {e}");
            assert!(e.message.contains(msg), "{text}: {e}");
        }
    }

    #[test]
    fn route_auth_needs_the_auth_section() {
        let text = format!(
            "{SVC}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"w\"\nroles = [\"admin\"]\n"
        );
        let e = err(&text);
        assert_eq!((e.line, e.field.as_str()), (7, "routes[0].roles"), "{e}");
        assert!(e.message.contains("needs an [auth] section"), "{e}");
        let text = format!(
            "{SVC}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"w\"\nauth = \"required\"\n"
        );
        assert_eq!(err(&text).field, "routes[0].auth");
        let text = format!(
            "{SVC}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"w\"\nauth = \"public\"\n"
        );
        assert!(parse(&text, Path::new("t.toml")).is_ok());
    }

    #[test]
    fn roles_and_scopes_need_a_required_route() {
        for (mode, extra, field, msg) in [
            (
                "public",
                "roles = [\"admin\"]",
                "routes[0].roles",
                "a public route cannot require roles",
            ),
            (
                "optional",
                "scopes = [\"w\"]",
                "routes[0].scopes",
                "an optional route cannot require scopes",
            ),
        ] {
            let text = format!(
                "[auth]\nissuer = \"a\"\njwks_url = \"https://a/j\"\n{SVC}[[routes]]\nmethod = \"GET\"\npath = \"/a\"\nservice = \"w\"\nauth = \"{mode}\"\n{extra}\n"
            );
            let e = err(&text);
            assert_eq!((e.line, e.field.as_str()), (11, field), "{e}");
            assert!(e.message.contains(msg), "{e}");
        }
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;

    #[test]
    fn values_are_left_out_of_type_errors() {
        let e = parse("[admin]\nlisten = 98765432109876\n", Path::new("g.toml")).unwrap_err();
        assert!(!e.to_string().contains("98765432109876"), "{e}");
        assert!(e.message.contains("invalid type: integer, expected"), "{e}");
        let e = parse(
            "[server]\nmax_connections = \"hunter2\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(
            e.message.starts_with("invalid type: string, expected"),
            "{e}"
        );
        assert_eq!((e.line, e.field.as_str()), (2, "server.max_connections"));
    }
}
