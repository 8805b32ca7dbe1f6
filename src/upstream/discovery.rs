//! Placeholder until the discovery module lands.

use std::net::SocketAddr;

/// One endpoint found by discovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Discovered {
    /// Address.
    pub address: SocketAddr,
    /// Weight.
    pub weight: u32,
}

/// A source of endpoints.
pub trait Discovery: Send + Sync + std::fmt::Debug + 'static {
    /// Run until `stop`, publishing lists.
    fn run(
        self: std::sync::Arc<Self>,
        tx: tokio::sync::watch::Sender<std::sync::Arc<Vec<Discovered>>>,
        stop: tokio_util::sync::CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, ()>;
    /// Description.
    fn describe(&self) -> String;
}

/// Which records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecord {
    /// A and AAAA.
    Address,
    /// A.
    Ipv4Only,
    /// AAAA.
    Ipv6Only,
    /// SRV.
    Srv,
}

/// DNS settings.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Name.
    pub name: String,
    /// Port.
    pub port: u16,
    /// Record.
    pub record: DnsRecord,
    /// Servers.
    pub nameservers: Vec<SocketAddr>,
    /// Min TTL.
    pub min_ttl: std::time::Duration,
    /// Max TTL.
    pub max_ttl: std::time::Duration,
    /// Timeout.
    pub timeout: std::time::Duration,
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Bad.
    #[error("bad: {0}")]
    Bad(String),
}

/// DNS.
#[derive(Debug)]
pub struct DnsDiscovery(DnsConfig);

impl DnsDiscovery {
    /// New.
    pub fn new(config: DnsConfig) -> Result<Self, DiscoveryError> {
        Ok(DnsDiscovery(config))
    }
}

impl Discovery for DnsDiscovery {
    fn run(
        self: std::sync::Arc<Self>,
        _tx: tokio::sync::watch::Sender<std::sync::Arc<Vec<Discovered>>>,
        stop: tokio_util::sync::CancellationToken,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move { stop.cancelled().await })
    }
    fn describe(&self) -> String {
        format!("dns {}", self.0.name)
    }
}
