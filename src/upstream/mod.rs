//! Upstream services: their endpoints, connection pools, endpoint choice and
//! the per-endpoint state that health checks, outlier detection and circuit
//! breaking read and write.
//!
//! A service's endpoints live in an [`EndpointSet`] behind an `ArcSwap`:
//! discovery swaps in a new set that reuses the `Arc<Endpoint>` of every
//! address that stayed, so their pools, health and load figures survive and
//! in-flight requests to removed endpoints finish on the old set.

pub mod balance;
pub mod discovery;
pub mod h1;
pub mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

pub use balance::{BalancePolicy, Balancer, Load};
pub use pool::{PoolConfig, UpstreamProtocol};

use crate::clock::Clock;
use crate::error::Error;
use crate::geo::{GeoHints, GeoRoutingPolicy, Reason, RegionId};
use crate::health::outlier::{OutlierDetection, OutlierState};
use crate::health::{HealthChecker, HealthRecord, HealthState};
use crate::router::{RouteGeo, ServiceTarget};

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

/// One address of a service, with its pool and its health and load figures.
#[derive(Debug)]
pub struct Endpoint {
    /// Where to connect.
    pub address: SocketAddr,
    /// The region the endpoint runs in, if configured.
    pub region: Option<String>,
    /// Relative share of traffic (round robin, least request, peak EWMA);
    /// discovery may change it, the balancer reads it when a set is built.
    weight: AtomicU32,
    /// `ip:port` as an authority, for h2 requests.
    pub authority: http::uri::Authority,
    /// `ip:port` as a `Host` value, for [`HostPolicy::Endpoint`].
    pub host_value: http::HeaderValue,
    pub(crate) pool: Arc<pool::Pool>,
    /// Active-check state, read by every pick (one relaxed load).
    active: AtomicU8,
    /// The probes' RTT EWMA in µs (0: none yet), mirrored from `record` for
    /// readers on the request path (geo routing's measured latency).
    probe_rtt_us: AtomicU64,
    /// Active-check history, written by the probe task, read by the admin API.
    pub(crate) record: std::sync::Mutex<HealthRecord>,
    /// Passive health: real traffic's failures.
    pub(crate) outlier: OutlierState,
    in_flight: AtomicU32,
    requests: AtomicU64,
    failures: AtomicU64,
    latency: balance::PeakEwma,
    identity: u64,
}

impl Endpoint {
    /// An endpoint with its own connection pool, weight 1.
    pub fn new(address: SocketAddr, region: Option<String>, pool_config: PoolConfig) -> Self {
        let text = address.to_string();
        let authority = text.parse().expect("a socket address is a valid authority");
        let host_value =
            http::HeaderValue::from_str(&text).expect("a socket address is a valid header value");
        Endpoint {
            address,
            region,
            weight: AtomicU32::new(1),
            authority,
            host_value,
            pool: pool::Pool::new(address, pool_config),
            active: AtomicU8::new(HealthState::Unknown.to_u8()),
            probe_rtt_us: AtomicU64::new(0),
            record: std::sync::Mutex::new(HealthRecord::default()),
            outlier: OutlierState::default(),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: balance::PeakEwma::new(Duration::from_secs(10)),
            identity: balance::stable_hash(text.as_bytes()),
        }
    }

    /// The same endpoint with another weight (0 counts as 1).
    pub fn with_weight(self, weight: u32) -> Self {
        self.weight.store(weight.max(1), Ordering::Relaxed);
        self
    }

    /// Relative share of traffic.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Idle pooled connections (for tests and the admin API).
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }

    /// What active health checks say.
    pub fn health_state(&self) -> HealthState {
        HealthState::from_u8(self.active.load(Ordering::Relaxed))
    }

    /// The EWMA of passing probes' round-trip time, once a probe passed.
    pub fn probe_latency(&self) -> Option<Duration> {
        match self.probe_rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    pub(crate) fn set_probe_latency(&self, ms: f64) {
        let us = (ms * 1000.0).clamp(1.0, u64::MAX as f64) as u64;
        self.probe_rtt_us.store(us, Ordering::Relaxed);
    }

    pub(crate) fn set_health_state(&self, state: HealthState) {
        self.active.store(state.to_u8(), Ordering::Relaxed);
    }

    /// Requests sent to it whose response has not ended.
    pub fn requests_in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests sent to it so far.
    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed exchanges (5xx, connect errors, timeouts, resets) so far.
    pub fn failures_total(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Peak-EWMA latency of real requests (time to response headers).
    pub fn latency_estimate(&self, now: Duration) -> Duration {
        Duration::from_nanos(self.latency.get_ns(now))
    }

    /// Not marked down by active checks and not ejected by passive ones.
    #[inline]
    fn serves(&self, now_ms: u64) -> bool {
        self.health_state().serves() && !self.outlier.is_ejected(now_ms)
    }
}

impl Load for Endpoint {
    fn weight(&self) -> u32 {
        Endpoint::weight(self)
    }
    fn in_flight(&self) -> u32 {
        self.requests_in_flight()
    }
    fn latency_ns(&self, now: Duration) -> u64 {
        self.latency.get_ns(now)
    }
    fn identity(&self) -> u64 {
        self.identity
    }
}

/// One version of a service's endpoints and the balancer built over them.
#[derive(Debug)]
pub struct EndpointSet {
    /// The endpoints, in config (or discovery) order.
    pub endpoints: Vec<Arc<Endpoint>>,
    balancer: Balancer,
    /// With geo routing: the endpoints by region, each with a balancer of
    /// its own (so consistent hashing stays stable within a region).
    pub(crate) groups: Vec<RegionGroup>,
    /// The group of each endpoint (`NO_GROUP` without geo routing).
    group_of: Vec<u8>,
}

const NO_GROUP: u8 = u8::MAX;

/// The endpoints of one region.
#[derive(Debug)]
pub(crate) struct RegionGroup {
    /// `None`: endpoints without a region (or one the policy does not know).
    pub(crate) region: Option<RegionId>,
    endpoints: Vec<Arc<Endpoint>>,
    /// Index in the whole set of each of `endpoints`.
    global: Vec<usize>,
    balancer: Balancer,
    /// Mean probe RTT of the serving endpoints, µs; recomputed at most
    /// every `MEASURE_EVERY_MS` by the request that finds it stale.
    measured_us: AtomicU64,
    measured_at_ms: AtomicU64,
}

const MEASURE_EVERY_MS: u64 = 100;

impl RegionGroup {
    /// The region's measured round trip, ms (0 until a probe passed).
    pub(crate) fn measured_ms(&self, now_ms: u64) -> u32 {
        let at = self.measured_at_ms.load(Ordering::Relaxed);
        if at == u64::MAX || now_ms.saturating_sub(at) >= MEASURE_EVERY_MS {
            self.measured_at_ms.store(now_ms, Ordering::Relaxed);
            let (sum, n) = self
                .endpoints
                .iter()
                .filter(|e| e.serves(now_ms))
                .filter_map(|e| e.probe_latency())
                .fold((0u64, 0u64), |(s, n), d| (s + d.as_micros() as u64, n + 1));
            let mean = sum.checked_div(n).unwrap_or(0);
            self.measured_us.store(mean, Ordering::Relaxed);
        }
        let us = self.measured_us.load(Ordering::Relaxed);
        u32::try_from(us.div_ceil(1000)).unwrap_or(u32::MAX)
    }
}

impl EndpointSet {
    fn new(
        policy: BalancePolicy,
        endpoints: Vec<Arc<Endpoint>>,
        geo: Option<&GeoRoutingPolicy>,
    ) -> Self {
        let balancer = Balancer::new(policy, &endpoints);
        let mut groups: Vec<RegionGroup> = Vec::new();
        let mut group_of = vec![NO_GROUP; endpoints.len()];
        if let Some(geo) = geo {
            let mut members: Vec<(Option<RegionId>, Vec<usize>)> = Vec::new();
            for (i, e) in endpoints.iter().enumerate() {
                let r = e.region.as_deref().and_then(|n| geo.id(n));
                match members.iter().position(|(g, _)| *g == r) {
                    Some(g) => members[g].1.push(i),
                    None if members.len() < crate::geo::MAX_SERVICE_REGIONS => {
                        members.push((r, vec![i]))
                    }
                    // Config refuses this; discovery gives one region.
                    None => {}
                }
            }
            for (g, (region, global)) in members.into_iter().enumerate() {
                let eps: Vec<Arc<Endpoint>> =
                    global.iter().map(|&i| Arc::clone(&endpoints[i])).collect();
                for &i in &global {
                    group_of[i] = g as u8;
                }
                groups.push(RegionGroup {
                    region,
                    balancer: Balancer::new(policy, &eps),
                    endpoints: eps,
                    global,
                    measured_us: AtomicU64::new(0),
                    measured_at_ms: AtomicU64::new(u64::MAX),
                });
            }
        }
        EndpointSet {
            endpoints,
            balancer,
            groups,
            group_of,
        }
    }

    /// The region of endpoint `i`, with geo routing.
    pub(crate) fn region_of(&self, i: usize) -> Option<RegionId> {
        match self.group_of.get(i) {
            Some(&g) if g != NO_GROUP => self.groups[usize::from(g)].region,
            _ => None,
        }
    }
}

/// The most endpoints discovery may give one service (each has a pool and
/// a probe task; a runaway DNS answer must not exhaust the process).
pub const MAX_DISCOVERED_ENDPOINTS: usize = 4096;

/// What requests get when no endpoint passes its health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllUnhealthy {
    /// Spread requests over every endpoint (Envoy's panic routing): health
    /// checks that fail everywhere at once are more often wrong than right.
    RouteToAll,
    /// Answer 503 at once.
    Fail,
}

/// What a consistent-hash service hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A path parameter of the matched route (`param:world_id`).
    Param(String),
    /// A request header (`header:x-session-id`).
    Header(http::HeaderName),
    /// The token's `sub` (`user`).
    User,
}

/// The request's hash key, put in the request's extensions by the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHash(pub u64);

/// A service's retry budget: retries may add at most `percent` % to the
/// load the service gets, plus a burst of `burst` (Finagle's and linkerd's
/// model), so retries cannot turn a brown-out into an outage.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a retry each retryable request earns.
    deposit: i64,
    /// Most thousandths saved up.
    cap: i64,
    balance: std::sync::atomic::AtomicI64,
    granted: AtomicU64,
    refused: AtomicU64,
}

impl RetryBudget {
    /// A budget of `percent` % extra requests and a burst of `burst` retries.
    pub fn new(percent: u32, burst: u32) -> Self {
        let cap = i64::from(burst) * 1000;
        RetryBudget {
            deposit: i64::from(percent) * 10,
            cap,
            balance: std::sync::atomic::AtomicI64::new(cap),
            granted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A retryable request arrived.
    pub fn deposit(&self) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b < self.cap).then(|| (b + self.deposit).min(self.cap))
            });
    }

    /// Take one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let ok = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok();
        if ok {
            self.granted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// A retry was due but the budget was known to be spent.
    pub fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Retries granted so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Retries refused because the budget was spent.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whole retries available now.
    pub fn available(&self) -> i64 {
        self.balance.load(Ordering::Relaxed) / 1000
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(20, 10)
    }
}

/// How a service chooses and protects its endpoints.
#[derive(Debug, Clone)]
pub struct ServicePolicy {
    /// Endpoint choice.
    pub balance: BalancePolicy,
    /// What consistent hashing hashes (`None`: round robin for every request).
    pub hash_key: Option<HashKey>,
    /// When no endpoint is healthy.
    pub all_unhealthy: AllUnhealthy,
    /// Passive health (`None`: off).
    pub outlier: Option<OutlierDetection>,
    /// Circuit breaker: requests in flight per endpoint at most; an endpoint
    /// at its cap is skipped, and a service whose endpoints all are answers
    /// 503 at once.
    pub max_requests_per_endpoint: u32,
}

impl Default for ServicePolicy {
    fn default() -> Self {
        ServicePolicy {
            balance: BalancePolicy::RoundRobin,
            hash_key: None,
            all_unhealthy: AllUnhealthy::RouteToAll,
            outlier: Some(OutlierDetection::default()),
            max_requests_per_endpoint: 1024,
        }
    }
}

/// A backend service: its endpoints and how requests reach them.
pub struct Service {
    /// The service this is.
    pub target: ServiceTarget,
    /// Protocol spoken to every endpoint.
    pub protocol: UpstreamProtocol,
    /// How `Host` is set.
    pub host: HostPolicy,
    set: ArcSwap<EndpointSet>,
    policy: ServicePolicy,
    /// Shared by all routes to the service.
    pub retry_budget: RetryBudget,
    pub(crate) health_check: Option<Arc<HealthChecker>>,
    pub(crate) discovery: Option<Arc<dyn discovery::Discovery>>,
    pool_config: PoolConfig,
    /// Region given to endpoints that discovery finds.
    discovered_region: Option<String>,
    clock: Arc<dyn Clock>,
    /// Bumped on every endpoint-set change, for the health supervisor.
    pub(crate) generation: tokio::sync::watch::Sender<u64>,
    /// Held while an ejection is decided, so two endpoints failing at once
    /// cannot both pass the `max_ejection_percent` check (failures only).
    eject_lock: std::sync::Mutex<()>,
    /// Requests are being panic-routed (logged once when it starts and ends).
    panicking: std::sync::atomic::AtomicBool,
    /// Geo routing state, when `[geo]` is configured.
    pub(crate) geo: Option<ServiceGeo>,
}

/// A service's geo-routing state.
#[derive(Debug)]
pub(crate) struct ServiceGeo {
    pub(crate) policy: Arc<GeoRoutingPolicy>,
    /// Per client region (the last slot: clients with none): the region
    /// its requests went to last, as id + 1 (0: none yet). Hysteresis
    /// keeps it.
    current: Box<[std::sync::atomic::AtomicU16]>,
    /// Per region: when it became usable (ms on the service clock + 1;
    /// 0: since the start), `DOWN` while it is not.
    since: Box<[AtomicU64]>,
}

const DOWN: u64 = u64::MAX;

impl ServiceGeo {
    fn new(policy: Arc<GeoRoutingPolicy>) -> Self {
        let n = policy.regions().len();
        ServiceGeo {
            current: (0..=n)
                .map(|_| std::sync::atomic::AtomicU16::new(0))
                .collect(),
            since: (0..n).map(|_| AtomicU64::new(0)).collect(),
            policy,
        }
    }

    /// The region a client region's requests went to last.
    pub(crate) fn current(&self, client: Option<RegionId>) -> Option<RegionId> {
        let slot = client.map_or(self.current.len() - 1, |c| usize::from(c.0));
        match self.current.get(slot)?.load(Ordering::Relaxed) {
            0 => None,
            v => Some(RegionId(v - 1)),
        }
    }

    /// Whether a region is up and has been for `failback`.
    pub(crate) fn settled(&self, r: RegionId, now_ms: u64) -> bool {
        let since = self.since[usize::from(r.0)].load(Ordering::Relaxed);
        since != DOWN
            && (since == 0
                || now_ms.saturating_sub(since - 1) >= self.policy.failback.as_millis() as u64)
    }

    /// Note what a request saw of a region: the recovery clock starts at
    /// the first request that finds it usable again.
    fn observe(&self, r: RegionId, usable: bool, now_ms: u64) {
        let since = &self.since[usize::from(r.0)];
        if !usable {
            if since.load(Ordering::Relaxed) != DOWN {
                since.store(DOWN, Ordering::Relaxed);
            }
        } else if since.load(Ordering::Relaxed) == DOWN {
            let at = now_ms.saturating_add(1).min(DOWN - 1);
            let _ = since.compare_exchange(DOWN, at, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// One service's regions as geo routing sees them now (admin API).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeoServiceStatus {
    /// The service.
    pub service: String,
    /// Its regions.
    pub regions: Vec<GeoRegionStatus>,
    /// Per client region: the region its requests went to last.
    pub current: std::collections::BTreeMap<String, String>,
}

/// One region of a service (admin API).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeoRegionStatus {
    /// The region (`null`: endpoints without a known region).
    pub region: Option<String>,
    /// Its endpoints.
    pub endpoints: usize,
    /// Endpoints passing their checks and not ejected.
    pub serving: usize,
    /// Up and not recovering.
    pub settled: bool,
    /// Mean probe RTT of its serving endpoints, ms.
    pub measured_ms: u32,
    /// Expected latency from each client region: configured + measured.
    pub expected_ms: std::collections::BTreeMap<String, u32>,
}

/// Where one request may go, region by region: the chosen region first,
/// then the others a retry or a full region fails over to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RegionPlan {
    order: [u8; crate::geo::MAX_SERVICE_REGIONS],
    len: u8,
    pos: u8,
    /// Only the first region may be used (a pinned route).
    pinned: bool,
    /// Why the region in use now was chosen.
    pub(crate) reason: Reason,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("target", &self.target)
            .field("endpoints", &self.set.load().endpoints.len())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A round-robin service over these endpoints, with default policies.
    pub fn new(
        target: ServiceTarget,
        endpoints: Vec<Arc<Endpoint>>,
        protocol: UpstreamProtocol,
        host: HostPolicy,
    ) -> Self {
        let policy = ServicePolicy::default();
        let pool_config = endpoints
            .first()
            .map(|e| e.pool.config().clone())
            .unwrap_or_else(|| PoolConfig::for_protocol(protocol));
        Service {
            target,
            protocol,
            host,
            set: ArcSwap::from_pointee(EndpointSet::new(policy.balance, endpoints, None)),
            policy,
            retry_budget: RetryBudget::default(),
            health_check: None,
            discovery: None,
            pool_config,
            discovered_region: None,
            clock: Arc::new(crate::clock::SystemClock),
            generation: tokio::sync::watch::Sender::new(0),
            eject_lock: std::sync::Mutex::new(()),
            panicking: std::sync::atomic::AtomicBool::new(false),
            geo: None,
        }
    }

    fn build_set(&self, endpoints: Vec<Arc<Endpoint>>) -> EndpointSet {
        EndpointSet::new(
            self.policy.balance,
            endpoints,
            self.geo.as_ref().map(|g| &*g.policy),
        )
    }

    /// The same service with these policies.
    pub fn with_policy(mut self, policy: ServicePolicy) -> Self {
        self.policy = policy;
        let endpoints = self.set.load().endpoints.clone();
        self.set = ArcSwap::from_pointee(self.build_set(endpoints));
        self
    }

    /// The same service, its requests routed to regions by `policy`.
    pub fn with_geo(mut self, policy: Arc<GeoRoutingPolicy>) -> Self {
        self.geo = Some(ServiceGeo::new(policy));
        let endpoints = self.set.load().endpoints.clone();
        self.set = ArcSwap::from_pointee(self.build_set(endpoints));
        self
    }

    /// Geo routing's view of the service, when it uses geo routing.
    pub fn geo_status(&self) -> Option<GeoServiceStatus> {
        let geo = self.geo.as_ref()?;
        let p = &geo.policy;
        let now_ms = self.now_ms();
        let set = self.set.load();
        let clients: Vec<RegionId> = (0..p.regions().len() as u16).map(RegionId).collect();
        let regions = set
            .groups
            .iter()
            .map(|g| {
                let measured_ms = g.measured_ms(now_ms);
                GeoRegionStatus {
                    region: g.region.map(|r| p.name(r).to_string()),
                    endpoints: g.endpoints.len(),
                    serving: g.endpoints.iter().filter(|e| e.serves(now_ms)).count(),
                    settled: g.region.is_none_or(|r| geo.settled(r, now_ms)),
                    measured_ms,
                    expected_ms: match g.region {
                        Some(r) => clients
                            .iter()
                            .map(|&c| {
                                let ms = p
                                    .expected_latency_ms(Some(c), r)
                                    .saturating_add(measured_ms);
                                (p.name(c).to_string(), ms)
                            })
                            .collect(),
                        None => Default::default(),
                    },
                }
            })
            .collect();
        let current = clients
            .iter()
            .filter_map(|&c| {
                let r = geo.current(Some(c))?;
                Some((p.name(c).to_string(), p.name(r).to_string()))
            })
            .collect();
        Some(GeoServiceStatus {
            service: self.target.to_string(),
            regions,
            current,
        })
    }

    /// The geo-routing policy, when the service uses one.
    pub fn geo_policy(&self) -> Option<&Arc<GeoRoutingPolicy>> {
        self.geo.as_ref().map(|g| &g.policy)
    }

    /// The same service with this retry budget.
    pub fn with_retry_budget(mut self, budget: RetryBudget) -> Self {
        self.retry_budget = budget;
        self
    }

    /// The same service, probed by `checker`.
    pub fn with_health_check(mut self, checker: HealthChecker) -> Self {
        self.health_check = Some(Arc::new(checker));
        self
    }

    /// The same service, its endpoints found (and kept current) by `source`.
    pub fn with_discovery(mut self, source: Arc<dyn discovery::Discovery>) -> Self {
        self.discovery = Some(source);
        self
    }

    /// How this service's endpoints are pooled (and spoken to: TLS).
    pub fn pool_config(&self) -> &PoolConfig {
        &self.pool_config
    }

    /// The same service, new endpoints (from discovery) pooled with `config`.
    pub fn with_pool_config(mut self, config: PoolConfig) -> Self {
        self.pool_config = config;
        self
    }

    /// The same service, endpoints found by discovery placed in `region`.
    pub fn with_discovered_region(mut self, region: Option<String>) -> Self {
        self.discovered_region = region;
        self
    }

    /// The same service with ejection times on `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Its policies.
    pub fn policy(&self) -> &ServicePolicy {
        &self.policy
    }

    /// The active checker, if any.
    pub fn health_check(&self) -> Option<&Arc<HealthChecker>> {
        self.health_check.as_ref()
    }

    /// The current endpoints.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.set.load_full()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.monotonic().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Replace the endpoints with `found`, keeping the `Arc<Endpoint>` (its
    /// pool, health, ejection and load) of every address that stays, with
    /// its new weight. At most [`MAX_DISCOVERED_ENDPOINTS`] are taken.
    pub fn update_endpoints(&self, found: &[discovery::Discovered]) {
        let found = if found.len() > MAX_DISCOVERED_ENDPOINTS {
            tracing::warn!(
                service = %self.target,
                found = found.len(),
                kept = MAX_DISCOVERED_ENDPOINTS,
                "discovery found more endpoints than a service takes: the rest are ignored"
            );
            &found[..MAX_DISCOVERED_ENDPOINTS]
        } else {
            found
        };
        let old = self.set.load_full();
        let by_address: std::collections::HashMap<SocketAddr, &Arc<Endpoint>> =
            old.endpoints.iter().map(|e| (e.address, e)).collect();
        let mut reweighted = false;
        let mut next = Vec::with_capacity(found.len());
        for d in found {
            next.push(match by_address.get(&d.address) {
                Some(e) => {
                    let w = d.weight.max(1);
                    if e.weight() != w {
                        e.weight.store(w, Ordering::Relaxed);
                        reweighted = true;
                    }
                    Arc::clone(e)
                }
                None => Arc::new(
                    Endpoint::new(
                        d.address,
                        self.discovered_region.clone(),
                        self.pool_config.clone(),
                    )
                    .with_weight(d.weight),
                ),
            });
        }
        let same = !reweighted
            && next.len() == old.endpoints.len()
            && next
                .iter()
                .zip(&old.endpoints)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            return;
        }
        tracing::info!(service = %self.target, endpoints = next.len(), "endpoint set changed");
        self.set.store(Arc::new(self.build_set(next)));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Take what a rebuilt service can of `old`, the running service of the
    /// same name whose settings changed (a reload): a discovering service
    /// asking the same source starts with the endpoints `old` found (not
    /// with none until its first answer), and an endpoint at an address
    /// `old` also had keeps its active-check state and probe history when
    /// both are checked (a down endpoint stays down, not "unknown" and
    /// served, until a probe says otherwise). Pools and passive (outlier)
    /// state start afresh: they belong to the old settings.
    pub(crate) fn inherit(&self, old: &Service) {
        if let (Some(new_source), Some(old_source)) = (&self.discovery, &old.discovery)
            && self.set.load().endpoints.is_empty()
            && new_source.describe() == old_source.describe()
        {
            let found: Vec<discovery::Discovered> = old
                .endpoints()
                .endpoints
                .iter()
                .map(|e| discovery::Discovered {
                    address: e.address,
                    weight: e.weight(),
                })
                .collect();
            if !found.is_empty() {
                self.update_endpoints(&found);
            }
        }
        if self.health_check.is_none() || old.health_check.is_none() {
            return;
        }
        let old_set = old.endpoints();
        let by_address: std::collections::HashMap<SocketAddr, &Arc<Endpoint>> =
            old_set.endpoints.iter().map(|e| (e.address, e)).collect();
        for e in &self.endpoints().endpoints {
            let Some(was) = by_address.get(&e.address) else {
                continue;
            };
            e.set_health_state(was.health_state());
            e.probe_rtt_us
                .store(was.probe_rtt_us.load(Ordering::Relaxed), Ordering::Relaxed);
            let record = was.record.lock().unwrap_or_else(|p| p.into_inner()).clone();
            *e.record.lock().unwrap_or_else(|p| p.into_inner()) = record;
        }
    }

    /// Choose an endpoint of `set` not in `tried`, now.
    ///
    /// # Errors
    /// [`Error::NoEndpoint`] when the set is empty or every endpoint was
    /// tried, [`Error::NoHealthyEndpoint`] when none is healthy and the
    /// service fails fast, [`Error::CircuitOpen`] when every usable endpoint
    /// is at its concurrency cap.
    #[cfg(test)]
    pub(crate) fn pick(
        &self,
        set: &EndpointSet,
        hash: Option<u64>,
        tried: &[usize],
    ) -> Result<usize, Error> {
        self.pick_at(set, hash, tried, self.clock.monotonic())
    }

    /// The regions one request may use, in order, or `None` when geo
    /// routing does not apply (no `[geo]`, the route turned it off, or no
    /// endpoint has a region the policy knows).
    pub(crate) fn plan(
        &self,
        set: &EndpointSet,
        hints: GeoHints,
        route: RouteGeo,
        now: Duration,
    ) -> Result<Option<RegionPlan>, Error> {
        let Some(geo) = &self.geo else {
            return Ok(None);
        };
        if set.groups.iter().all(|g| g.region.is_none()) {
            return Ok(None);
        }
        let mut plan = RegionPlan {
            order: [0; crate::geo::MAX_SERVICE_REGIONS],
            len: 0,
            pos: 0,
            pinned: false,
            reason: Reason::Nearest,
        };
        match route {
            RouteGeo::Off => return Ok(None),
            RouteGeo::Pinned(r) => {
                let g = set
                    .groups
                    .iter()
                    .position(|g| g.region == Some(r))
                    .ok_or(Error::NoEndpoint)?;
                plan.order[0] = g as u8;
                plan.len = 1;
                plan.pinned = true;
                plan.reason = Reason::Pinned;
                return Ok(Some(plan));
            }
            RouteGeo::Nearest => {}
        }
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let max = self.policy.max_requests_per_endpoint;
        let mut cands = [crate::geo::Candidate {
            cost_ms: 0,
            usable: false,
            settled: false,
        }; crate::geo::MAX_SERVICE_REGIONS];
        let mut current = None;
        let was = geo.current(hints.client);
        for (i, g) in set.groups.iter().enumerate() {
            // Down (no endpoint passes its checks) is an outage and starts
            // the failback hold; full (all at their concurrency cap) only
            // skips the region for this request: a spike is not an outage.
            let mut serving = false;
            let mut room = false;
            for e in &g.endpoints {
                if e.serves(now_ms) {
                    serving = true;
                    if e.requests_in_flight() < max {
                        room = true;
                        break;
                    }
                }
            }
            let c = &mut cands[i];
            c.usable = room;
            match g.region {
                Some(r) => {
                    geo.observe(r, serving, now_ms);
                    c.settled = room && geo.settled(r, now_ms);
                    c.cost_ms = geo
                        .policy
                        .expected_latency_ms(hints.client, r)
                        .saturating_add(g.measured_ms(now_ms));
                    if was == Some(r) {
                        current = Some(i);
                    }
                }
                None => {
                    c.settled = room;
                    c.cost_ms = geo.policy.unknown_latency_ms;
                }
            }
        }
        let cands = &cands[..set.groups.len()];
        // A session's region is honoured while it is usable and out of its
        // failback hold (a session never lands on a region still proving
        // itself).
        let sticky = hints
            .sticky
            .and_then(|r| set.groups.iter().position(|g| g.region == Some(r)))
            .filter(|&i| cands[i].usable && cands[i].settled);
        let first = match sticky {
            Some(i) => Some((i, Reason::Sticky)),
            None => crate::geo::choose::choose(cands, current, geo.policy.hysteresis_ms),
        };
        let Some((first, reason)) = first else {
            plan.reason = Reason::NoHealthyRegion;
            return Ok(Some(plan));
        };
        // Only a choice made for proximity becomes the region hysteresis
        // protects: a failover (or a sticky session) must not keep a client
        // region away from its nearest region once that is back.
        if reason == Reason::Nearest
            && let Some(r) = set.groups[first].region
            && was != Some(r)
            && let Some(slot) = geo.current.get(
                hints
                    .client
                    .map_or(geo.current.len() - 1, |c| usize::from(c.0)),
            )
        {
            slot.store(r.0 + 1, Ordering::Relaxed);
        }
        plan.order[0] = first as u8;
        let rest = crate::geo::choose::fallback_order(cands, first, &mut plan.order[1..]);
        plan.len = 1 + rest as u8;
        plan.reason = reason;
        Ok(Some(plan))
    }

    /// The region a request from `client` (with the session's `sticky`
    /// region) would be sent to now, and why: what the dispatcher does
    /// first for every request of a geo-routed service.
    pub fn route_region(
        &self,
        client: Option<RegionId>,
        sticky: Option<RegionId>,
    ) -> Option<(RegionId, Reason)> {
        let set = self.set.load();
        let hints = GeoHints { client, sticky };
        let plan = self
            .plan(&set, hints, RouteGeo::Nearest, self.clock.monotonic())
            .ok()??;
        if plan.len == 0 {
            return None;
        }
        let g = &set.groups[usize::from(plan.order[0])];
        Some((g.region?, plan.reason))
    }

    /// Choose an endpoint following `plan` (region by region), or over the
    /// whole set without one. When no planned region has a usable endpoint
    /// the whole set is tried, under the service's `all_unhealthy` rule
    /// (a pinned route stays in its region).
    ///
    /// # Errors
    /// As [`Service::pick_at`].
    pub(crate) fn pick_planned(
        &self,
        set: &EndpointSet,
        plan: Option<&mut RegionPlan>,
        hash: Option<u64>,
        tried: &[usize],
        now: Duration,
    ) -> Result<usize, Error> {
        let Some(plan) = plan else {
            return self.pick_at(set, hash, tried, now);
        };
        let eps = &set.endpoints;
        let max = self.policy.max_requests_per_endpoint;
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let open = |i: usize| !tried.contains(&i);
        let room = |i: usize| eps[i].requests_in_flight() < max;
        let usable = |i: usize| open(i) && eps[i].serves(now_ms) && room(i);
        while plan.pos < plan.len {
            let g = &set.groups[usize::from(plan.order[usize::from(plan.pos)])];
            let in_group = |j: usize| usable(g.global[j]);
            let found = if tried.is_empty() || hash.is_some() {
                g.balancer.pick(&g.endpoints, hash, in_group, now)
            } else {
                random_scan(g.endpoints.len(), in_group)
            };
            if let Some(j) = found {
                return Ok(g.global[j]);
            }
            if plan.pinned {
                break;
            }
            plan.pos += 1;
            plan.reason = Reason::Failover;
        }
        if plan.pinned {
            // Pinned: the service's rules for a service down to this region.
            let g = &set.groups[usize::from(plan.order[0])];
            let members = || g.global.iter().copied();
            if !members().any(open) {
                return Err(Error::NoEndpoint);
            }
            if members().any(|i| open(i) && eps[i].serves(now_ms)) {
                return Err(Error::CircuitOpen);
            }
            return match self.policy.all_unhealthy {
                AllUnhealthy::Fail => Err(Error::NoHealthyEndpoint),
                AllUnhealthy::RouteToAll => {
                    let any = |j: usize| open(g.global[j]) && room(g.global[j]);
                    // Keys keep their endpoint in panic routing too.
                    let found = match hash {
                        Some(_) => g.balancer.pick(&g.endpoints, hash, any, now),
                        None => random_scan(g.global.len(), any),
                    };
                    found.map(|j| g.global[j]).ok_or(Error::CircuitOpen)
                }
            };
        }
        if !(0..eps.len()).any(|i| eps[i].serves(now_ms)) {
            plan.reason = Reason::NoHealthyRegion;
        }
        self.pick_at(set, hash, tried, now)
    }

    /// [`Service::pick`] at `now` (the caller's clock reading, reused for
    /// the attempt's latency measurement: one reading fewer per request).
    pub(crate) fn pick_at(
        &self,
        set: &EndpointSet,
        hash: Option<u64>,
        tried: &[usize],
        now: Duration,
    ) -> Result<usize, Error> {
        let eps = &set.endpoints;
        let max = self.policy.max_requests_per_endpoint;
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let open = |i: usize| !tried.contains(&i);
        let room = |i: usize| eps[i].requests_in_flight() < max;
        let balancer = &set.balancer;
        let usable = |i: usize| open(i) && eps[i].serves(now_ms) && room(i);
        // A retry of a key keeps the hash's deterministic fallback; other
        // retries take a random untried endpoint, so they do not move the
        // round-robin cursor (which would send every first attempt to the
        // same endpoint when one retry follows each request).
        let first = if tried.is_empty() || hash.is_some() {
            balancer.pick(eps, hash, usable, now)
        } else {
            random_scan(eps.len(), usable)
        };
        if let Some(i) = first {
            if self.panicking.load(Ordering::Relaxed)
                && self.panicking.swap(false, Ordering::Relaxed)
            {
                tracing::info!(service = %self.target, "an endpoint passes its checks again: panic routing ends");
            }
            return Ok(i);
        }
        if !(0..eps.len()).any(open) {
            return Err(Error::NoEndpoint);
        }
        if (0..eps.len()).any(|i| open(i) && eps[i].serves(now_ms)) {
            return Err(Error::CircuitOpen);
        }
        match self.policy.all_unhealthy {
            AllUnhealthy::Fail => Err(Error::NoHealthyEndpoint),
            AllUnhealthy::RouteToAll => {
                // Logged once per episode (a retry finding only unhealthy
                // untried endpoints is not one).
                if tried.is_empty() && !self.panicking.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        service = %self.target,
                        endpoints = eps.len(),
                        "no endpoint passes its checks: routing to all of them (all_unhealthy = \"route_to_all\")"
                    );
                }
                self.panic_pick(set, hash, tried, now)
            }
        }
    }

    fn panic_pick(
        &self,
        set: &EndpointSet,
        hash: Option<u64>,
        tried: &[usize],
        now: Duration,
    ) -> Result<usize, Error> {
        let eps = &set.endpoints;
        let max = self.policy.max_requests_per_endpoint;
        let open = |i: usize| !tried.contains(&i);
        let room = |i: usize| eps[i].requests_in_flight() < max;
        let balancer = &set.balancer;
        match hash {
            Some(_) => balancer
                .pick(eps, hash, |i| open(i) && room(i), now)
                .ok_or(Error::CircuitOpen),
            // Keys keep their endpoint if they have one; everything else is
            // spread at random (a round-robin cursor already moved by the
            // failed pass would favour some endpoints).
            None => random_scan(eps.len(), |i| open(i) && room(i)).ok_or(Error::CircuitOpen),
        }
    }

    /// True when no endpoint passes its checks (requests then follow
    /// [`ServicePolicy::all_unhealthy`]).
    pub fn in_panic(&self) -> bool {
        let now_ms = self.now_ms();
        let set = self.set.load();
        !set.endpoints.is_empty() && !set.endpoints.iter().any(|e| e.serves(now_ms))
    }

    /// Count one exchange's outcome for passive health.
    pub(crate) fn record_outcome(&self, endpoint: &Endpoint, ok: bool) {
        if ok {
            endpoint.outlier.success();
            return;
        }
        endpoint.failures.fetch_add(1, Ordering::Relaxed);
        let Some(cfg) = &self.policy.outlier else {
            return;
        };
        let now_ms = self.now_ms();
        let _decide = self.eject_lock.lock().unwrap_or_else(|p| p.into_inner());
        let ejected = endpoint.outlier.failure(cfg, now_ms, || {
            let set = self.set.load();
            let out = set
                .endpoints
                .iter()
                .filter(|e| e.outlier.is_ejected(now_ms))
                .count();
            cfg.may_eject(out, set.endpoints.len())
        });
        if let Some(time) = ejected {
            tracing::warn!(
                service = %self.target,
                endpoint = %endpoint.address,
                ejection = ?time,
                "endpoint ejected after consecutive failures"
            );
        }
    }
}

/// The first index passing `ok`, scanning from a random start.
fn random_scan(n: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = fastrand::usize(..n);
    (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
}

/// One request on its way to an endpoint: counts it in flight until its
/// response ends (or it fails), and measures its latency.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Duration,
}

impl InFlight {
    pub(crate) fn begin(endpoint: &Arc<Endpoint>, now: Duration) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        endpoint.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: Arc::clone(endpoint),
            started: now,
        }
    }

    /// The endpoint's address.
    pub(crate) fn endpoint_address(&self) -> SocketAddr {
        self.endpoint.address
    }

    /// The response headers arrived: feed the latency estimate.
    pub(crate) fn answered(&self, now: Duration) {
        self.endpoint
            .latency
            .observe(now.saturating_sub(self.started), now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(n: u16) -> Service {
        let cfg = PoolConfig::for_protocol(UpstreamProtocol::Http1);
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
    fn pick_skips_tried_unhealthy_and_full_endpoints() {
        let s = service(3);
        let set = s.endpoints();
        for _ in 0..6 {
            assert_ne!(s.pick(&set, None, &[1]).unwrap(), 1);
        }
        set.endpoints[0].set_health_state(HealthState::Unhealthy);
        for _ in 0..6 {
            assert_eq!(s.pick(&set, None, &[1]).unwrap(), 2);
        }
        assert!(matches!(
            s.pick(&set, None, &[0, 1, 2]),
            Err(Error::NoEndpoint)
        ));
        assert!(matches!(
            service(0).pick(&service(0).endpoints(), None, &[]),
            Err(Error::NoEndpoint)
        ));
    }

    #[test]
    fn all_unhealthy_routes_to_all_or_fails_fast() {
        let s = service(2);
        let set = s.endpoints();
        for e in &set.endpoints {
            e.set_health_state(HealthState::Unhealthy);
        }
        assert!(s.in_panic());
        let picks: std::collections::BTreeSet<usize> =
            (0..64).map(|_| s.pick(&set, None, &[]).unwrap()).collect();
        // Random spread: both are used (the chance of 64 equal picks is 2^-63).
        assert_eq!(picks.len(), 2);
        let f = service(2).with_policy(ServicePolicy {
            all_unhealthy: AllUnhealthy::Fail,
            ..ServicePolicy::default()
        });
        let fset = f.endpoints();
        for e in &fset.endpoints {
            e.set_health_state(HealthState::Unhealthy);
        }
        assert!(matches!(
            f.pick(&fset, None, &[]),
            Err(Error::NoHealthyEndpoint)
        ));
    }

    #[test]
    fn circuit_breaker_opens_at_the_cap() {
        let s = service(2).with_policy(ServicePolicy {
            max_requests_per_endpoint: 1,
            ..ServicePolicy::default()
        });
        let set = s.endpoints();
        let a = InFlight::begin(&set.endpoints[0], Duration::ZERO);
        assert_eq!(s.pick(&set, None, &[]).unwrap(), 1);
        let b = InFlight::begin(&set.endpoints[1], Duration::ZERO);
        assert!(matches!(s.pick(&set, None, &[]), Err(Error::CircuitOpen)));
        drop(a);
        assert_eq!(s.pick(&set, None, &[]).unwrap(), 0);
        drop(b);
        assert_eq!(set.endpoints[1].requests_in_flight(), 0);
        assert_eq!(set.endpoints[1].requests_total(), 1);
    }

    #[test]
    fn retry_budget_allows_burst_plus_percent() {
        let b = RetryBudget::new(20, 2);
        let mut granted = 0;
        for _ in 0..100 {
            b.deposit();
            if b.withdraw() {
                granted += 1;
            }
        }
        // 2 saved up + 99 × 0.2 earned (the first deposit found the
        // budget full).
        assert_eq!(granted, 21);
        assert_eq!(b.granted(), 21);
        assert_eq!(b.refused(), 79);
    }

    #[test]
    fn update_keeps_endpoints_that_stay() {
        let s = service(2);
        let before = s.endpoints();
        let keep = before.endpoints[1].address;
        let new: SocketAddr = ([127, 0, 0, 1], 9500).into();
        s.update_endpoints(&[
            discovery::Discovered {
                address: keep,
                weight: 1,
            },
            discovery::Discovered {
                address: new,
                weight: 1,
            },
        ]);
        let after = s.endpoints();
        assert_eq!(after.endpoints.len(), 2);
        assert!(Arc::ptr_eq(&after.endpoints[0], &before.endpoints[1]));
        assert_eq!(after.endpoints[1].address, new);
        assert_eq!(*s.generation.borrow(), 1);
    }
}
