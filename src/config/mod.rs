//! Configuration: the TOML file ([`file`]), its validation ([`validate`]) and
//! the compiled [`Snapshot`] requests run against.

pub mod auth;
pub mod file;
pub mod files;
pub mod geo;
pub mod log;
pub mod ratelimit;
pub mod relay;
pub mod reuse;
pub mod snapshot;
pub mod tls;
pub mod upstream;
pub mod validate;

pub use auth::IdentityHeaders;
pub use ratelimit::RateLimits;
pub use reuse::Components;
pub use snapshot::{ServerSettings, Snapshot};
pub use validate::{
    ConfigError, GatewayConfig, load, parse, parse_reusing, parse_with_clock, read_text,
};
