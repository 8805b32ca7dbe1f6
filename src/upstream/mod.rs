//! Upstream services: their endpoints, connection pools and endpoint choice.

pub mod balance;
pub mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use pool::{PoolConfig, UpstreamProtocol};

use crate::router::ServiceTarget;

/// How the `Host` header is set on requests to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPolicy {
    /// Forward the client's `Host` (the default, as Envoy does).
    Preserve,
    /// Use the endpoint's `ip:port`.
    Endpoint,
    /// Use this fixed value.
    Fixed(http::HeaderValue),
}

/// One address of a service.
#[derive(Debug)]
pub struct Endpoint {
    /// Where to connect.
    pub address: SocketAddr,
    /// The region the endpoint runs in, if configured.
    pub region: Option<String>,
    /// `ip:port` as an authority, for h2 requests.
    pub authority: http::uri::Authority,
    /// `ip:port` as a `Host` value, for [`HostPolicy::Endpoint`].
    pub host_value: http::HeaderValue,
    pub(crate) pool: Arc<pool::Pool>,
}

impl Endpoint {
    /// An endpoint with its own connection pool.
    pub fn new(address: SocketAddr, region: Option<String>, pool_config: PoolConfig) -> Self {
        let text = address.to_string();
        let authority = text.parse().expect("a socket address is a valid authority");
        let host_value =
            http::HeaderValue::from_str(&text).expect("a socket address is a valid header value");
        Endpoint {
            address,
            region,
            authority,
            host_value,
            pool: pool::Pool::new(address, pool_config),
        }
    }

    /// Idle pooled connections (for tests and the admin API).
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }
}

/// A backend service: its endpoints and how requests reach them.
#[derive(Debug)]
pub struct Service {
    /// The service this is.
    pub target: ServiceTarget,
    /// Its endpoints, in config order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Protocol spoken to every endpoint.
    pub protocol: UpstreamProtocol,
    /// How `Host` is set.
    pub host: HostPolicy,
    next: AtomicUsize,
}

impl Service {
    /// A service over these endpoints.
    pub fn new(
        target: ServiceTarget,
        endpoints: Vec<Arc<Endpoint>>,
        protocol: UpstreamProtocol,
        host: HostPolicy,
    ) -> Self {
        Service {
            target,
            endpoints,
            protocol,
            host,
            next: AtomicUsize::new(0),
        }
    }

    /// Round robin: the next endpoint, skipping `exclude` (the one that just failed).
    pub fn pick(&self, exclude: Option<usize>) -> Option<(usize, &Arc<Endpoint>)> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| Some(i) != exclude)
            .map(|i| (i, &self.endpoints[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn service(n: u16) -> Service {
        let cfg = PoolConfig {
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            max_idle: 1,
            idle_timeout: Duration::from_secs(1),
        };
        let eps = (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    ([127, 0, 0, 1], 9000 + i).into(),
                    None,
                    cfg.clone(),
                ))
            })
            .collect();
        Service::new(
            ServiceTarget::WorldService,
            eps,
            UpstreamProtocol::Http1,
            HostPolicy::Preserve,
        )
    }

    #[test]
    fn round_robin_cycles_and_skips_excluded() {
        let s = service(3);
        let picks: Vec<usize> = (0..6).map(|_| s.pick(None).unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        for _ in 0..5 {
            assert_ne!(s.pick(Some(1)).unwrap().0, 1);
        }
        assert!(service(1).pick(Some(0)).is_none());
        assert!(service(0).pick(None).is_none());
    }
}
