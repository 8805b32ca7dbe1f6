//! Routes: method + path template → a service target, with per-route policy.
//!
//! ```
//! use aether_gateway::{Router, Route, HttpMethod, ServiceTarget, RateLimitRule};
//! let mut router = Router::new();
//! router.add_route(Route {
//!     method: HttpMethod::Post,
//!     path: "/api/v1/worlds".into(),
//!     target: ServiceTarget::WorldService,
//!     rate_limit: Some(RateLimitRule {
//!         requests_per_minute: 60,
//!     }),
//! });
//! let found = router.lookup(&http::Method::POST, "/api/v1/worlds").unwrap();
//! assert!(matches!(found, aether_gateway::router::Lookup::Route(_)));
//! ```
//!
//! Matching uses a radix tree (matchit): `{name}` captures one segment and
//! `{*name}` captures the rest of the path. Paths are normalised with
//! [`normalize_path`] before they reach the matcher.

mod path;

pub use path::{PathError, PathOptions, normalize_path, normalize_path_with};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// An HTTP method a route can be registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpMethod {
    /// `GET` (also serves `HEAD` when no `HEAD` route exists).
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS` (answered by the gateway with `Allow` when no route exists).
    Options,
}

impl HttpMethod {
    /// Every method, in the order used for `Allow` headers.
    pub const ALL: [HttpMethod; 7] = [
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
        HttpMethod::Options,
    ];

    /// The canonical upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
        }
    }

    /// Parse an upper-case method name as written in config.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Map a request method; `None` for methods no route can name (TRACE, CONNECT, extensions).
    pub fn from_http(method: &http::Method) -> Option<Self> {
        Some(match *method {
            http::Method::GET => HttpMethod::Get,
            http::Method::HEAD => HttpMethod::Head,
            http::Method::POST => HttpMethod::Post,
            http::Method::PUT => HttpMethod::Put,
            http::Method::PATCH => HttpMethod::Patch,
            http::Method::DELETE => HttpMethod::Delete,
            http::Method::OPTIONS => HttpMethod::Options,
            _ => return None,
        })
    }

    /// Safe to retry: RFC 9110 §9.2.2 idempotent methods.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, HttpMethod::Post | HttpMethod::Patch)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which backend service a route sends its requests to.
///
/// Aether's own services have variants; any other service named in the
/// config is [`ServiceTarget::Named`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServiceTarget {
    /// `world-service`: world instances and their state.
    WorldService,
    /// `asset-service`: avatars, models, textures.
    AssetService,
    /// `social-service`: friends, parties, chat.
    SocialService,
    /// `presence-service`: who is online and where.
    PresenceService,
    /// `voice-service`: voice channel signalling.
    VoiceService,
    /// Any other service, by its config name.
    Named(String),
}

impl ServiceTarget {
    /// The service name used in config files.
    pub fn name(&self) -> &str {
        match self {
            ServiceTarget::WorldService => "world-service",
            ServiceTarget::AssetService => "asset-service",
            ServiceTarget::SocialService => "social-service",
            ServiceTarget::PresenceService => "presence-service",
            ServiceTarget::VoiceService => "voice-service",
            ServiceTarget::Named(n) => n,
        }
    }

    /// The target for a config service name (well-known names map to their variant).
    pub fn from_name(name: &str) -> Self {
        match name {
            "world-service" => ServiceTarget::WorldService,
            "asset-service" => ServiceTarget::AssetService,
            "social-service" => ServiceTarget::SocialService,
            "presence-service" => ServiceTarget::PresenceService,
            "voice-service" => ServiceTarget::VoiceService,
            other => ServiceTarget::Named(other.to_owned()),
        }
    }
}

impl fmt::Display for ServiceTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A route's rate limit (carried by the router; enforced by the rate limiter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitRule {
    /// Sustained requests per minute allowed.
    pub requests_per_minute: u32,
}

/// One route: method + path template → target service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The method this route answers.
    pub method: HttpMethod,
    /// Path template, e.g. `/api/v1/worlds/{world_id}` or `/assets/{*path}`.
    pub path: String,
    /// The service requests are sent to.
    pub target: ServiceTarget,
    /// Optional rate limit for this route.
    pub rate_limit: Option<RateLimitRule>,
}

/// Per-route behaviour beside the [`Route`] itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Time allowed for the upstream to send response headers. Default 30 s.
    pub timeout: Duration,
    /// Prefix removed from the path before forwarding (on a segment boundary).
    pub strip_prefix: Option<String>,
    /// Prefix put in front of the (stripped) path before forwarding.
    pub add_prefix: Option<String>,
    /// Request body cap for this route; `None` uses the server's cap.
    pub max_request_body_bytes: Option<u64>,
    /// Who may call the route (public unless `[auth]` is configured).
    pub auth: crate::auth::RouteAuth,
    /// The route's own limit (`rate_limit = { … }`), checked after auth.
    pub rate_limit: Option<crate::ratelimit::SharedRule>,
    /// The route's name, the same on every gateway with this config
    /// (`GET,PUT /api/v1/worlds/{world_id}`): names its counters.
    pub name: std::sync::Arc<str>,
    /// When failed attempts are tried again on another endpoint.
    pub retry: crate::dispatch::retry::RetryPolicy,
    /// What the service's consistent hashing hashes, copied from the
    /// service so the pipeline can compute it while the path parameters
    /// are at hand.
    pub hash_key: Option<crate::upstream::HashKey>,
    /// Geo routing for this route (`[geo]` configured): choose, pin, or off.
    pub geo: RouteGeo,
    /// Served by the gateway itself, not by the target service.
    pub internal: Option<Internal>,
}

/// A route the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Internal {
    /// `POST /api/v1/voice/credentials`: TURN credentials for the relay.
    VoiceCredentials,
}

/// How a route uses geo routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteGeo {
    /// The nearest usable region (the default).
    #[default]
    Nearest,
    /// Always this region (`region = "eu-west"`).
    Pinned(crate::geo::RegionId),
    /// Every endpoint of the service, whatever its region (`geo = false`).
    Off,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            timeout: Duration::from_secs(30),
            strip_prefix: None,
            add_prefix: None,
            max_request_body_bytes: None,
            auth: crate::auth::RouteAuth {
                mode: crate::auth::AuthMode::Public,
                forward_authorization: true,
                ..Default::default()
            },
            rate_limit: None,
            name: std::sync::Arc::from(""),
            retry: crate::dispatch::retry::RetryPolicy::default(),
            hash_key: None,
            geo: RouteGeo::Nearest,
            internal: None,
        }
    }
}

impl RoutePolicy {
    /// The path to send upstream for a normalised request path.
    pub fn upstream_path<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        let mut rest: &str = path;
        if let Some(prefix) = &self.strip_prefix
            && let Some(r) = path.strip_prefix(prefix.as_str())
        {
            if r.is_empty() {
                rest = "/";
            } else if r.starts_with('/') {
                rest = r;
            }
        }
        match &self.add_prefix {
            Some(add) if rest == "/" => Cow::Owned(format!("{add}/")),
            Some(add) => Cow::Owned(format!("{add}{rest}")),
            None if std::ptr::eq(rest, path) => Cow::Borrowed(path),
            None => Cow::Borrowed(rest),
        }
    }
}

/// A registered route with its policy and its index in the router.
#[derive(Debug)]
pub struct RouteEntry {
    /// The route as registered.
    pub route: Route,
    /// Its per-route policy.
    pub policy: RoutePolicy,
    /// Position in registration order (stable id for logs and metrics).
    pub id: usize,
    /// The route's metric handles, resolved on its first request.
    pub(crate) metrics: crate::metrics::RouteSlot,
}

/// Why a route could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The same method and path template are registered twice.
    #[error("duplicate route: {method} {path} is already defined")]
    Duplicate {
        /// The method.
        method: HttpMethod,
        /// The template.
        path: String,
    },
    /// The template overlaps another one ambiguously (`/a/{x}` and `/a/{y}`),
    /// whatever their methods: one path can match only one template.
    #[error(
        "path template {path:?} conflicts with {with:?}: a path may match only one template, whatever the method"
    )]
    Conflict {
        /// The template being added.
        path: String,
        /// The template already registered.
        with: String,
    },
    /// The template is not valid.
    #[error("invalid path template {path:?}: {reason}")]
    InvalidTemplate {
        /// The template.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A prefix in the policy is malformed.
    #[error("invalid prefix {0:?}: must start with '/' and not end with '/'")]
    InvalidPrefix(String),
}

#[derive(Debug)]
struct PathEntry {
    by_method: [Option<usize>; HttpMethod::ALL.len()],
    allow: http::HeaderValue,
}

impl PathEntry {
    fn route_for(&self, m: HttpMethod) -> Option<usize> {
        self.by_method[m.index()].or_else(|| {
            // HEAD is served by GET routes (hyper drops the body for us).
            (m == HttpMethod::Head)
                .then(|| self.by_method[HttpMethod::Get.index()])
                .flatten()
        })
    }

    fn compute_allow(&mut self) {
        let mut allow: Vec<&str> = Vec::new();
        for m in HttpMethod::ALL {
            let present = self.by_method[m.index()].is_some()
                || (m == HttpMethod::Head && self.by_method[HttpMethod::Get.index()].is_some())
                || m == HttpMethod::Options;
            if present {
                allow.push(m.as_str());
            }
        }
        self.allow = http::HeaderValue::from_str(&allow.join(", "))
            .expect("method names are valid header values");
    }
}

/// The result of looking a request up in the router.
#[derive(Debug)]
pub enum Lookup<'r, 'p> {
    /// A route matched; `params` are the captured template parameters.
    Route(RouteMatch<'r, 'p>),
    /// An `OPTIONS` request for a path with no `OPTIONS` route: answer with `Allow`.
    Options(http::HeaderValue),
}

/// A matched route and its captured path parameters.
#[derive(Debug)]
pub struct RouteMatch<'r, 'p> {
    /// The matched route entry.
    pub entry: &'r Arc<RouteEntry>,
    /// Captured `{param}` values, still percent-encoded as in the normalised path.
    pub params: matchit::Params<'r, 'p>,
}

/// The HTTP request router.
#[derive(Debug, Default)]
pub struct Router {
    matcher: matchit::Router<usize>,
    templates: HashMap<String, usize>,
    paths: Vec<PathEntry>,
    routes: Vec<Arc<RouteEntry>>,
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a route with the default policy.
    ///
    /// # Panics
    /// When the route is a duplicate or its template is invalid; use
    /// [`Router::try_add_route`] for routes that come from configuration.
    pub fn add_route(&mut self, route: Route) -> &Arc<RouteEntry> {
        let id = self
            .try_add_route(route, RoutePolicy::default())
            .unwrap_or_else(|e| panic!("{e}"));
        &self.routes[id]
    }

    /// Add a route with its policy; returns the route's id.
    ///
    /// # Errors
    /// [`RouteError`] for a duplicate method + template, an invalid or
    /// conflicting template, or a malformed prefix.
    pub fn try_add_route(
        &mut self,
        route: Route,
        policy: RoutePolicy,
    ) -> Result<usize, RouteError> {
        validate_template(&route.path)?;
        for p in [&policy.strip_prefix, &policy.add_prefix]
            .into_iter()
            .flatten()
        {
            if !p.starts_with('/') || p.ends_with('/') {
                return Err(RouteError::InvalidPrefix(p.clone()));
            }
        }
        let path_idx = match self.templates.get(&route.path) {
            Some(&i) => i,
            None => {
                let i = self.paths.len();
                self.matcher
                    .insert(route.path.clone(), i)
                    .map_err(|e| match e {
                        matchit::InsertError::Conflict { with } => RouteError::Conflict {
                            path: route.path.clone(),
                            with,
                        },
                        other => RouteError::InvalidTemplate {
                            path: route.path.clone(),
                            reason: other.to_string(),
                        },
                    })?;
                self.paths.push(PathEntry {
                    by_method: Default::default(),
                    allow: http::HeaderValue::from_static("OPTIONS"),
                });
                self.templates.insert(route.path.clone(), i);
                i
            }
        };
        let entry = &mut self.paths[path_idx];
        if entry.by_method[route.method.index()].is_some() {
            return Err(RouteError::Duplicate {
                method: route.method,
                path: route.path,
            });
        }
        let id = self.routes.len();
        entry.by_method[route.method.index()] = Some(id);
        entry.compute_allow();
        self.routes.push(Arc::new(RouteEntry {
            route,
            policy,
            id,
            metrics: Default::default(),
        }));
        Ok(id)
    }

    /// All routes in registration order.
    pub fn routes(&self) -> &[Arc<RouteEntry>] {
        &self.routes
    }

    /// Find the route for a method and an already-normalised path.
    ///
    /// # Errors
    /// [`Error::NoRoute`] (404) when no template matches the path,
    /// [`Error::MethodNotAllowed`] (405, with the `Allow` value) when the path
    /// exists under other methods.
    pub fn lookup<'r, 'p>(
        &'r self,
        method: &http::Method,
        path: &'p str,
    ) -> Result<Lookup<'r, 'p>, Error> {
        let m = self.matcher.at(path).map_err(|_| Error::NoRoute)?;
        let entry = &self.paths[*m.value];
        let method = HttpMethod::from_http(method);
        match method.and_then(|mm| entry.route_for(mm)) {
            Some(id) => Ok(Lookup::Route(RouteMatch {
                entry: &self.routes[id],
                params: m.params,
            })),
            None if method == Some(HttpMethod::Options) => Ok(Lookup::Options(entry.allow.clone())),
            None => Err(Error::MethodNotAllowed {
                allow: entry.allow.clone(),
            }),
        }
    }
}

fn validate_template(path: &str) -> Result<(), RouteError> {
    let bad = |reason: &str| RouteError::InvalidTemplate {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if !path.starts_with('/') {
        return Err(bad("must start with '/'"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%'))
    {
        return Err(bad(&format!(
            "character {c:?} is not allowed in a template"
        )));
    }
    // Templates must already be in normal form, or they could never match.
    let literal: String = path.replace(['{', '}', '*'], "x");
    match normalize_path(&literal) {
        Ok(n) if n == literal => Ok(()),
        _ => Err(bad("contains '//', '.' or '..' segments")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: HttpMethod, path: &str) -> Route {
        Route {
            method,
            path: path.into(),
            target: ServiceTarget::WorldService,
            rate_limit: None,
        }
    }

    fn router() -> Router {
        let mut r = Router::new();
        r.add_route(route(HttpMethod::Get, "/api/v1/worlds/{world_id}"));
        r.add_route(route(HttpMethod::Delete, "/api/v1/worlds/{world_id}"));
        r.add_route(route(HttpMethod::Post, "/api/v1/worlds"));
        r.add_route(route(HttpMethod::Get, "/assets/{*path}"));
        r
    }

    #[test]
    fn matches_params_and_catch_all() {
        let r = router();
        let Lookup::Route(m) = r.lookup(&http::Method::GET, "/api/v1/worlds/42").unwrap() else {
            panic!()
        };
        assert_eq!(m.params.get("world_id"), Some("42"));
        assert_eq!(m.entry.id, 0);
        let Lookup::Route(m) = r.lookup(&http::Method::GET, "/assets/a/b/c.png").unwrap() else {
            panic!()
        };
        assert_eq!(m.params.get("path"), Some("a/b/c.png"));
    }

    #[test]
    fn not_found_and_method_not_allowed() {
        let r = router();
        assert!(matches!(
            r.lookup(&http::Method::GET, "/nope"),
            Err(Error::NoRoute)
        ));
        match r.lookup(&http::Method::PUT, "/api/v1/worlds/1") {
            Err(Error::MethodNotAllowed { allow }) => {
                assert_eq!(allow, "GET, HEAD, DELETE, OPTIONS")
            }
            other => panic!("{other:?}"),
        }
        match r.lookup(&http::Method::TRACE, "/api/v1/worlds") {
            Err(Error::MethodNotAllowed { allow }) => assert_eq!(allow, "POST, OPTIONS"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn head_uses_get_and_options_is_answered() {
        let r = router();
        let Lookup::Route(m) = r.lookup(&http::Method::HEAD, "/api/v1/worlds/1").unwrap() else {
            panic!()
        };
        assert_eq!(m.entry.route.method, HttpMethod::Get);
        match r.lookup(&http::Method::OPTIONS, "/api/v1/worlds").unwrap() {
            Lookup::Options(allow) => assert_eq!(allow, "POST, OPTIONS"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.lookup(&http::Method::HEAD, "/api/v1/worlds"),
            Err(Error::MethodNotAllowed { .. })
        ));
    }

    #[test]
    fn encoded_slash_stays_inside_one_segment() {
        let r = router();
        let allow = PathOptions {
            allow_encoded_slashes: true,
        };
        let p = normalize_path_with("/api/v1/worlds/1%2Fadmin", allow).unwrap();
        let Lookup::Route(m) = r.lookup(&http::Method::GET, &p).unwrap() else {
            panic!()
        };
        assert_eq!(m.params.get("world_id"), Some("1%2Fadmin"));
        assert!(matches!(
            r.lookup(&http::Method::GET, "/api/v1%2Fworlds/1"),
            Err(Error::NoRoute)
        ));
    }

    #[test]
    fn rejects_duplicates_conflicts_and_bad_templates() {
        let mut r = router();
        assert_eq!(
            r.try_add_route(
                route(HttpMethod::Get, "/api/v1/worlds/{world_id}"),
                RoutePolicy::default()
            ),
            Err(RouteError::Duplicate {
                method: HttpMethod::Get,
                path: "/api/v1/worlds/{world_id}".into()
            })
        );
        assert_eq!(
            r.try_add_route(
                route(HttpMethod::Put, "/api/v1/worlds/{other}"),
                RoutePolicy::default()
            ),
            Err(RouteError::Conflict {
                path: "/api/v1/worlds/{other}".into(),
                with: "/api/v1/worlds/{world_id}".into()
            })
        );
        for bad in ["no-slash", "/a//b", "/a/../b", "/a b", "/a?x", "/a%2F"] {
            assert!(
                matches!(
                    r.try_add_route(route(HttpMethod::Get, bad), RoutePolicy::default()),
                    Err(RouteError::InvalidTemplate { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefix_rewrite() {
        let p = RoutePolicy {
            strip_prefix: Some("/api/v1".into()),
            add_prefix: Some("/internal".into()),
            ..RoutePolicy::default()
        };
        assert_eq!(p.upstream_path("/api/v1/worlds/1"), "/internal/worlds/1");
        assert_eq!(p.upstream_path("/api/v1"), "/internal/");
        assert_eq!(p.upstream_path("/api/v1x/y"), "/internal/api/v1x/y");
        let strip_only = RoutePolicy {
            strip_prefix: Some("/api".into()),
            ..RoutePolicy::default()
        };
        assert_eq!(strip_only.upstream_path("/api/x"), "/x");
        assert_eq!(RoutePolicy::default().upstream_path("/a"), "/a");
    }
}
