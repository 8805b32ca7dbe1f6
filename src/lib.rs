//! aether-gateway: the edge API gateway of the Aether VR platform.
//!
//! It sits between VR clients and Aether's backend services and gives them one
//! entry point with the cross-cutting concerns done once, at the edge.
//!
//! ```text
//!            ┌──────────────────────────── runtime ─────────────────────────────┐
//! client ──▶ │ accept (cap) → hyper (head limits) → request id → client address │
//!            │   → normalise path → router (404/405) → auth → rate limit       │
//!            │   → geo: region → dispatch: endpoint, pooled conn, timeout, retry│ ──▶ upstream
//!            │   ← hygiene, x-request-id, metrics, access log, tunnel on 101   │
//!            └──────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Each request loads one [`config::Snapshot`] and uses it to its end.
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
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod body;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod error;
pub mod geo;
pub mod health;
pub mod metrics;
pub mod ratelimit;
pub mod relay;
pub mod router;
pub mod runtime;
pub mod tls;
pub mod upstream;

pub use auth::{AuthMiddleware, AuthValidationPolicy, Token};
pub use dispatch::{DispatchContext, Dispatcher};
pub use error::Error;
pub use geo::{GeoRoutingPolicy, RegionLatencyProfile, RoutedRequest};
pub use health::{HealthCheckConfig, HealthChecker, ServiceHealth};
pub use ratelimit::{RateLimitPolicy, RateLimitStatus, RateLimiter};
pub use relay::{NatMode, RelayProfile, RelayRegion, RelaySession};
pub use router::{HttpMethod, RateLimitRule, Route, Router, ServiceTarget};
pub use runtime::{BackendRuntime, BackendRuntimeConfig, RunningGateway};
