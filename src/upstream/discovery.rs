//! Service discovery: endpoint lists that come from somewhere other than the
//! config file, published on a [`tokio::sync::watch`] channel.
//!
//! A [`Discovery`] source runs as one task per service and publishes every
//! changed list, sorted and deduplicated, as plain [`Discovered`] values; the
//! caller turns them into endpoints and pools. [`StaticDiscovery`] publishes
//! a fixed list once; [`DnsDiscovery`] follows A/AAAA or SRV records.
//!
//! # DNS failures never remove endpoints
//!
//! A failed resolution — timeout, SERVFAIL, REFUSED, NXDOMAIN, an empty
//! answer, or SRV targets without addresses — publishes nothing: the last good
//! list stays in effect, a `warn` is logged with the name and the error, and
//! the query is retried after `min_ttl`, doubling on each further failure up
//! to `max_ttl`. A DNS outage or a botched zone push is far more common than
//! a service that really has no endpoints, and routing to the last known
//! addresses degrades much better than failing every request. So the records
//! change the list (to remove endpoints, change the records) but cannot empty
//! it; to remove a service, change the config. Before the first success
//! nothing has been published and the watch keeps its initial (usually empty)
//! value.
//!
//! # Re-resolution
//!
//! A good answer is re-asked after its smallest TTL (CNAMEs, SRV records and
//! the SRV targets' addresses included), clamped to `[min_ttl, max_ttl]`, so
//! a TTL of 0 cannot cause a query storm and a TTL of a day cannot pin stale
//! endpoints. Every resolution goes to the nameservers: hickory's response
//! cache is sized 0 and cleared before each round, because it would otherwise
//! answer from memory (on `std` time, not tokio's) and we already decide
//! ourselves when an answer is stale.
//!
//! `/etc/hosts` is not consulted: its entries carry no TTL, and a stray line
//! there would silently override the records an operator is editing. A name
//! without a trailing dot goes through the search list only when the system
//! configuration (`resolv.conf`) is used; with explicit nameservers it is
//! taken as fully qualified.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::rdata::SRV;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a discovery source publishes: the whole current list.
pub type EndpointList = Arc<Vec<Discovered>>;

/// One endpoint found by discovery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Discovered {
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative share of traffic (at least 1).
    pub weight: u32,
}

/// A source of endpoints; Consul/Kubernetes sources can implement this later.
pub trait Discovery: Send + Sync + fmt::Debug + 'static {
    /// Run until `stop` is cancelled, publishing every changed endpoint list (sorted, deduplicated) on `tx`.
    /// The first successful resolution is published as soon as it is known.
    fn run(
        self: Arc<Self>,
        tx: watch::Sender<Arc<Vec<Discovered>>>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()>;

    /// Human-readable description for logs/admin JSON, e.g. "dns a+aaaa world.internal:9001".
    fn describe(&self) -> String;
}

/// Start `source` on the current runtime; the receiver starts at an empty list.
pub fn spawn(
    source: Arc<dyn Discovery>,
    stop: CancellationToken,
) -> (watch::Receiver<EndpointList>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    let task = tokio::spawn(source.run(tx, stop));
    (rx, task)
}

/// Sort and merge duplicate addresses, summing their weights: two SRV records
/// that lead to the same address give it both their shares.
pub fn normalize(mut list: Vec<Discovered>) -> Vec<Discovered> {
    list.sort_unstable();
    let mut out: Vec<Discovered> = Vec::with_capacity(list.len());
    for d in list {
        match out.last_mut() {
            Some(last) if last.address == d.address => {
                last.weight = last.weight.saturating_add(d.weight);
            }
            _ => out.push(d),
        }
    }
    out
}

/// Publish `list` only if it differs from the current value; true if it did.
fn publish(tx: &watch::Sender<EndpointList>, list: Vec<Discovered>) -> bool {
    tx.send_if_modified(|current| {
        if **current == list {
            false
        } else {
            *current = Arc::new(list);
            true
        }
    })
}

/// A fixed list: publishes once, then waits for stop.
#[derive(Debug, Clone)]
pub struct StaticDiscovery(pub Vec<Discovered>);

impl Discovery for StaticDiscovery {
    fn run(
        self: Arc<Self>,
        tx: watch::Sender<Arc<Vec<Discovered>>>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        async move {
            publish(&tx, normalize(self.0.clone()));
            stop.cancelled().await;
        }
        .boxed()
    }

    fn describe(&self) -> String {
        let list: Vec<String> = self.0.iter().map(|d| d.address.to_string()).collect();
        format!("static {}", list.join(","))
    }
}

/// Which DNS records a [`DnsDiscovery`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecord {
    /// A and AAAA records, queried together.
    Address,
    /// A records only.
    Ipv4Only,
    /// AAAA records only.
    Ipv6Only,
    /// SRV records (RFC 2782), their targets resolved to A and AAAA.
    Srv,
}

impl DnsRecord {
    /// The address record types this mode asks for.
    fn address_types(self) -> &'static [RecordType] {
        match self {
            DnsRecord::Address | DnsRecord::Srv => &[RecordType::A, RecordType::AAAA],
            DnsRecord::Ipv4Only => &[RecordType::A],
            DnsRecord::Ipv6Only => &[RecordType::AAAA],
        }
    }

    fn label(self) -> &'static str {
        match self {
            DnsRecord::Address => "a+aaaa",
            DnsRecord::Ipv4Only => "a",
            DnsRecord::Ipv6Only => "aaaa",
            DnsRecord::Srv => "srv",
        }
    }
}

/// Re-resolve no sooner than this by default.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(5);
/// Re-resolve no later than this by default.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
/// Per-query timeout by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What to resolve, where, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// "world.internal", or "_world._tcp.internal" for SRV.
    pub name: String,
    /// Port for A/AAAA endpoints; ignored for SRV (the records carry it).
    pub port: u16,
    /// Which records to follow.
    pub record: DnsRecord,
    /// Nameservers to ask over UDP (TCP on truncation); empty = the system's `resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Re-resolve no sooner than this, and first retry after a failure.
    pub min_ttl: Duration,
    /// Re-resolve no later than this, and the longest retry backoff.
    pub max_ttl: Duration,
    /// Per query.
    pub timeout: Duration,
}

impl DnsConfig {
    /// A config with the system nameservers and the default TTL bounds and timeout.
    pub fn new(name: impl Into<String>, port: u16, record: DnsRecord) -> Self {
        DnsConfig {
            name: name.into(),
            port,
            record,
            nameservers: Vec::new(),
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why discovery could not be set up, or why one resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The configured name is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName {
        /// The name as configured.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// TTL bounds or timeout that would busy-loop or never re-resolve.
    #[error("invalid DNS discovery timing: {0}")]
    InvalidTiming(&'static str),
    /// The system resolver configuration could not be read.
    #[error("cannot read the system DNS configuration: {0}")]
    SystemConfig(#[source] NetError),
    /// The resolver could not be built.
    #[error("cannot build the DNS resolver: {0}")]
    Resolver(#[source] NetError),
    /// A query failed without a usable answer (timeout, SERVFAIL, REFUSED, I/O).
    #[error("DNS query {record_type} {name} failed: {source}")]
    Query {
        /// The name asked.
        name: String,
        /// The record type asked.
        record_type: RecordType,
        /// What went wrong.
        #[source]
        source: NetError,
    },
    /// The name exists nowhere or has no usable records (NXDOMAIN, empty answer).
    #[error("DNS name {name} has no {what}")]
    NoRecords {
        /// The name asked.
        name: String,
        /// What was missing, e.g. "A/AAAA records".
        what: &'static str,
    },
    /// A whole round took longer than its deadline.
    #[error("DNS resolution of {name} did not finish within {deadline:?}")]
    Deadline {
        /// The name asked.
        name: String,
        /// The deadline that passed.
        deadline: Duration,
    },
}

/// One successful resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The endpoints, normalized.
    pub endpoints: Vec<Discovered>,
    /// The smallest TTL among the records used (unclamped).
    pub ttl: Duration,
}

/// Endpoints from A/AAAA or SRV records, re-resolved on their TTL.
pub struct DnsDiscovery {
    config: DnsConfig,
    name: Name,
    resolver: TokioResolver,
}

impl fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// hickory's own retries per query; our loop retries a failed round with
/// backoff, so one more try only covers a lost datagram.
const HICKORY_ATTEMPTS: usize = 1;

impl DnsDiscovery {
    /// Validate the config and build its resolver (reads `resolv.conf` when no nameservers are given).
    pub fn new(config: DnsConfig) -> Result<Self, DiscoveryError> {
        if config.min_ttl.is_zero() {
            return Err(DiscoveryError::InvalidTiming(
                "min_ttl must be above zero (it spaces the queries)",
            ));
        }
        if config.min_ttl > config.max_ttl {
            return Err(DiscoveryError::InvalidTiming(
                "min_ttl must not exceed max_ttl",
            ));
        }
        if config.timeout.is_zero() {
            return Err(DiscoveryError::InvalidTiming("timeout must be above zero"));
        }
        let invalid = |reason: String| DiscoveryError::InvalidName {
            name: config.name.clone(),
            reason,
        };
        if config.name.trim().is_empty() || config.name == "." {
            return Err(invalid("empty".into()));
        }
        let name = Name::from_ascii(&config.name).map_err(|e| invalid(e.to_string()))?;

        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(DiscoveryError::SystemConfig)?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = config.timeout;
        opts.attempts = HICKORY_ATTEMPTS;
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver = builder.build().map_err(DiscoveryError::Resolver)?;
        Ok(DnsDiscovery {
            config,
            name,
            resolver,
        })
    }

    /// The config this was built from.
    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// Resolve once, now, without publishing (also for admin "resolve now" checks).
    pub async fn resolve(&self) -> Result<Resolution, DiscoveryError> {
        let deadline = self.round_deadline();
        let round = async {
            // Belt and braces with cache_size 0: a cached answer would
            // outlive the max_ttl we promise (see the module docs).
            self.resolver.clear_cache();
            match self.config.record {
                DnsRecord::Srv => self.resolve_srv().await,
                mode => {
                    let found = self.addresses(&self.name, mode.address_types()).await?;
                    if found.ips.is_empty() {
                        return Err(self.no_records(&self.name, "A/AAAA records"));
                    }
                    let endpoints = found
                        .ips
                        .iter()
                        .map(|&ip| Discovered {
                            address: SocketAddr::new(ip, self.config.port),
                            weight: 1,
                        })
                        .collect();
                    Ok(Resolution {
                        endpoints: normalize(endpoints),
                        ttl: secs(found.ttl),
                    })
                }
            }
        };
        tokio::time::timeout(deadline, round)
            .await
            .unwrap_or_else(|_| {
                Err(DiscoveryError::Deadline {
                    name: self.config.name.clone(),
                    deadline,
                })
            })
    }

    /// A guard against a lookup that never completes: two steps (SRV, then
    /// targets), each of at most `1 + HICKORY_ATTEMPTS` timed-out tries,
    /// plus slack.
    fn round_deadline(&self) -> Duration {
        self.config
            .timeout
            .saturating_mul(2 * (1 + HICKORY_ATTEMPTS as u32) + 1)
    }

    fn no_records(&self, name: &Name, what: &'static str) -> DiscoveryError {
        DiscoveryError::NoRecords {
            name: display_name(name),
            what,
        }
    }

    /// The addresses of `name` for `types`, queried concurrently. A family
    /// with no records is empty, not an error: the other one may have some.
    async fn addresses(
        &self,
        name: &Name,
        types: &[RecordType],
    ) -> Result<Addresses, DiscoveryError> {
        let lookups = join_all(
            types
                .iter()
                .map(|&t| async move { (t, self.resolver.lookup(name.clone(), t).await) }),
        )
        .await;
        let mut out = Addresses::default();
        for (record_type, result) in lookups {
            match result {
                Ok(lookup) => out.add(&lookup, record_type),
                Err(e) if is_no_records(&e) => {}
                Err(source) => {
                    return Err(DiscoveryError::Query {
                        name: display_name(name),
                        record_type,
                        source,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn resolve_srv(&self) -> Result<Resolution, DiscoveryError> {
        let lookup = match self
            .resolver
            .lookup(self.name.clone(), RecordType::SRV)
            .await
        {
            Ok(lookup) => lookup,
            Err(e) if is_no_records(&e) => return Err(self.no_records(&self.name, "SRV records")),
            Err(source) => {
                return Err(DiscoveryError::Query {
                    name: self.config.name.clone(),
                    record_type: RecordType::SRV,
                    source,
                });
            }
        };
        let srv_ttl = min_ttl(lookup.answers());
        let srvs: Vec<&SRV> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                // A target of "." means "no service here" (RFC 2782).
                RData::SRV(srv) if !srv.target.is_root() => Some(srv),
                _ => None,
            })
            .collect();
        let mut priorities: Vec<u16> = srvs.iter().map(|s| s.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();

        // RFC 2782: only the lowest priority is used while any of its targets
        // can be reached; a group whose targets all have no addresses is no
        // better than unreachable, so the next one is tried.
        for priority in priorities {
            let group: Vec<&SRV> = srvs
                .iter()
                .copied()
                .filter(|s| s.priority == priority)
                .collect();
            let mut targets: Vec<&Name> = group.iter().map(|s| &s.target).collect();
            targets.sort();
            targets.dedup();
            let lookup = &lookup;
            let resolved = join_all(targets.iter().map(|&target| async move {
                let glued = Addresses::from_additionals(lookup, target);
                if glued.ips.is_empty() {
                    self.addresses(target, DnsRecord::Srv.address_types())
                        .await
                        .map(|found| (target, found))
                } else {
                    Ok((target, glued))
                }
            }))
            .await;
            let mut endpoints = Vec::new();
            let mut ttl = srv_ttl;
            for result in resolved {
                // A transient failure on any target fails the round: a
                // partial list would drop endpoints because of a hiccup.
                let (target, found) = result?;
                if found.ips.is_empty() {
                    tracing::warn!(
                        name = %self.config.name,
                        target = %target,
                        "DNS discovery: SRV target has no A/AAAA records; skipping it"
                    );
                    continue;
                }
                ttl = min_opt(ttl, found.ttl);
                for srv in group.iter().filter(|s| &s.target == target) {
                    endpoints.extend(found.ips.iter().map(|&ip| Discovered {
                        address: SocketAddr::new(ip, srv.port),
                        weight: u32::from(srv.weight).max(1),
                    }));
                }
            }
            if !endpoints.is_empty() {
                return Ok(Resolution {
                    endpoints: normalize(endpoints),
                    ttl: secs(ttl),
                });
            }
        }
        Err(self.no_records(&self.name, "SRV records with reachable targets"))
    }
}

impl Discovery for DnsDiscovery {
    fn run(
        self: Arc<Self>,
        tx: watch::Sender<Arc<Vec<Discovered>>>,
        stop: CancellationToken,
    ) -> BoxFuture<'static, ()> {
        async move {
            let (min, max) = (self.config.min_ttl, self.config.max_ttl);
            let mut failures: u32 = 0;
            loop {
                let outcome = tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    outcome = self.resolve() => outcome,
                };
                let wait = match outcome {
                    Ok(resolution) => {
                        failures = 0;
                        let count = resolution.endpoints.len();
                        if publish(&tx, resolution.endpoints) {
                            tracing::info!(
                                source = %self.describe(),
                                endpoints = count,
                                "DNS discovery: endpoint list changed"
                            );
                        }
                        refresh_after(resolution.ttl, min, max)
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let wait = retry_after(failures, min, max);
                        tracing::warn!(
                            name = %self.config.name,
                            %error,
                            failures,
                            retry_in = ?wait,
                            "DNS discovery failed; the last endpoint list stays in effect"
                        );
                        wait
                    }
                };
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let mut s = match c.record {
            DnsRecord::Srv => format!("dns srv {}", c.name),
            mode => format!("dns {} {}:{}", mode.label(), c.name, c.port),
        };
        if !c.nameservers.is_empty() {
            let servers: Vec<String> = c.nameservers.iter().map(|a| a.to_string()).collect();
            s.push_str(" via ");
            s.push_str(&servers.join(","));
        }
        s
    }
}

/// Addresses found for one name, with the smallest TTL of the records used.
#[derive(Debug, Default)]
struct Addresses {
    ips: Vec<IpAddr>,
    ttl: Option<u32>,
}

impl Addresses {
    /// Take the `record_type` addresses from an answer; its TTL counts CNAMEs
    /// too, since a changed alias changes the addresses.
    fn add(&mut self, lookup: &Lookup, record_type: RecordType) {
        let before = self.ips.len();
        self.ips.extend(
            lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == record_type)
                .filter_map(record_ip),
        );
        if self.ips.len() > before {
            self.ttl = min_opt(self.ttl, min_ttl(lookup.answers()));
        }
    }

    /// The target's addresses from the SRV answer's additional section.
    fn from_additionals(lookup: &Lookup, target: &Name) -> Self {
        let records: Vec<&Record> = lookup
            .additionals()
            .iter()
            .filter(|r| &r.name == target && record_ip(r).is_some())
            .collect();
        Addresses {
            ips: records.iter().filter_map(|r| record_ip(r)).collect(),
            ttl: records.iter().map(|r| r.ttl).min(),
        }
    }
}

fn record_ip(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

fn min_ttl(records: &[Record]) -> Option<u32> {
    records.iter().map(|r| r.ttl).min()
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// No TTL at all (cannot happen for a non-empty answer) counts as 0, i.e. `min_ttl`.
fn secs(ttl: Option<u32>) -> Duration {
    Duration::from_secs(u64::from(ttl.unwrap_or(0)))
}

fn display_name(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

/// A definitive "nothing here" (NXDOMAIN or NOERROR with no answer), as
/// opposed to a server that could not answer.
fn is_no_records(e: &NetError) -> bool {
    matches!(
        e,
        NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code: ResponseCode::NoError | ResponseCode::NXDomain,
            ..
        }))
    )
}

/// When to ask again after a good answer with this TTL.
fn refresh_after(ttl: Duration, min: Duration, max: Duration) -> Duration {
    // min wins over max should they ever cross: a late refresh beats a busy loop.
    ttl.min(max).max(min)
}

/// When to retry after `failures` failed rounds in a row (1 = the first):
/// `min`, doubling each time, never above `max` (but never below `min`).
fn retry_after(failures: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max).max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn d(addr: &str, weight: u32) -> Discovered {
        Discovered {
            address: addr.parse().unwrap(),
            weight,
        }
    }

    #[test]
    fn refresh_is_the_ttl_clamped_to_the_bounds() {
        assert_eq!(refresh_after(S(30), S(5), S(300)), S(30));
        assert_eq!(refresh_after(S(0), S(5), S(300)), S(5));
        assert_eq!(refresh_after(S(1), MS(200), S(300)), S(1));
        assert_eq!(refresh_after(S(86_400), S(5), S(300)), S(300));
        assert_eq!(refresh_after(S(5), S(5), S(5)), S(5));
        // Crossed bounds (rejected by `new`) still never go below min.
        assert_eq!(refresh_after(S(0), S(10), S(1)), S(10));
    }

    #[test]
    fn retry_doubles_from_min_and_stops_at_max() {
        let got: Vec<Duration> = (1..=8).map(|f| retry_after(f, S(5), S(60))).collect();
        assert_eq!(got, [S(5), S(10), S(20), S(40), S(60), S(60), S(60), S(60)]);
        assert_eq!(retry_after(0, S(5), S(60)), S(5));
        assert_eq!(retry_after(1, MS(200), S(1)), MS(200));
        assert_eq!(retry_after(3, MS(200), S(1)), MS(800));
        assert_eq!(retry_after(4, MS(200), S(1)), S(1));
    }

    #[test]
    fn retry_does_not_overflow() {
        for f in [31, 32, 33, 64, u32::MAX] {
            assert_eq!(retry_after(f, S(5), S(300)), S(300));
        }
        let huge = Duration::MAX / 2;
        assert_eq!(retry_after(40, huge, Duration::MAX), Duration::MAX);
        assert_eq!(retry_after(3, S(1), S(1)), S(1));
    }

    #[test]
    fn normalize_sorts_and_merges_duplicate_addresses() {
        let list = vec![
            d("127.0.0.3:80", 1),
            d("[::1]:80", 2),
            d("127.0.0.2:80", 5),
            d("127.0.0.3:80", 4),
            d("127.0.0.2:81", 1),
        ];
        assert_eq!(
            normalize(list),
            [
                d("127.0.0.2:80", 5),
                d("127.0.0.2:81", 1),
                d("127.0.0.3:80", 5),
                d("[::1]:80", 2),
            ]
        );
        assert_eq!(
            normalize(vec![d("127.0.0.2:80", u32::MAX), d("127.0.0.2:80", 3)]),
            [d("127.0.0.2:80", u32::MAX)]
        );
    }

    #[test]
    fn publish_only_on_change() {
        let (tx, mut rx) = watch::channel(Arc::new(Vec::new()));
        assert!(!publish(&tx, Vec::new()));
        assert!(!rx.has_changed().unwrap());
        assert!(publish(&tx, vec![d("127.0.0.2:80", 1)]));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert!(!publish(&tx, vec![d("127.0.0.2:80", 1)]));
        assert!(!rx.has_changed().unwrap());
    }

    fn config(name: &str, record: DnsRecord) -> DnsConfig {
        DnsConfig {
            nameservers: vec!["127.0.0.1:53".parse().unwrap()],
            ..DnsConfig::new(name, 9001, record)
        }
    }

    #[test]
    fn new_rejects_timings_that_loop_or_never_refresh() {
        let mut c = config("world.internal", DnsRecord::Address);
        c.min_ttl = Duration::ZERO;
        assert!(matches!(
            DnsDiscovery::new(c),
            Err(DiscoveryError::InvalidTiming(_))
        ));
        let mut c = config("world.internal", DnsRecord::Address);
        c.min_ttl = S(10);
        c.max_ttl = S(5);
        assert!(matches!(
            DnsDiscovery::new(c),
            Err(DiscoveryError::InvalidTiming(_))
        ));
        let mut c = config("world.internal", DnsRecord::Address);
        c.timeout = Duration::ZERO;
        assert!(matches!(
            DnsDiscovery::new(c),
            Err(DiscoveryError::InvalidTiming(_))
        ));
    }

    #[test]
    fn new_rejects_bad_names() {
        for name in ["", ".", "a..b", &"x".repeat(64)] {
            let err = DnsDiscovery::new(config(name, DnsRecord::Address)).unwrap_err();
            assert!(
                matches!(err, DiscoveryError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn describe_names_mode_target_and_servers() {
        let a = DnsDiscovery::new(config("world.internal", DnsRecord::Address)).unwrap();
        assert_eq!(
            a.describe(),
            "dns a+aaaa world.internal:9001 via 127.0.0.1:53"
        );
        let v6 = DnsDiscovery::new(config("world.internal", DnsRecord::Ipv6Only)).unwrap();
        assert_eq!(
            v6.describe(),
            "dns aaaa world.internal:9001 via 127.0.0.1:53"
        );
        let srv = DnsDiscovery::new(config("_world._tcp.internal", DnsRecord::Srv)).unwrap();
        assert_eq!(
            srv.describe(),
            "dns srv _world._tcp.internal via 127.0.0.1:53"
        );
    }

    #[tokio::test]
    async fn static_publishes_once_normalized_and_ends_on_stop() {
        let source = Arc::new(StaticDiscovery(vec![
            d("127.0.0.3:80", 1),
            d("127.0.0.2:80", 2),
            d("127.0.0.3:80", 1),
        ]));
        assert_eq!(
            source.describe(),
            "static 127.0.0.3:80,127.0.0.2:80,127.0.0.3:80"
        );
        let stop = CancellationToken::new();
        let (mut rx, task) = spawn(source, stop.clone());
        tokio::time::timeout(S(5), rx.changed())
            .await
            .expect("published")
            .unwrap();
        assert_eq!(
            **rx.borrow_and_update(),
            [d("127.0.0.2:80", 2), d("127.0.0.3:80", 2)]
        );
        stop.cancel();
        tokio::time::timeout(S(5), task)
            .await
            .expect("ends on stop")
            .unwrap();
        assert!(!rx.has_changed().unwrap_or(false));
    }
}
