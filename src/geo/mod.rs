//! Geo routing: each request goes to the region with the lowest expected
//! latency from the client, among the regions that can serve it.
//!
//! Two halves, both plain data with no sockets:
//! - **where the client is** ([`locate`]): a region header from a trusted
//!   proxy, the operator's CIDR rules, a MaxMind-format GeoIP database
//!   mapped by country/continent rules, then the default region; GeoIP
//!   answers are cached per /24 (IPv4) or /48 (IPv6) in a fixed-size
//!   lock-free table ([`cache`]);
//! - **which region serves it** ([`choose`]): expected latency = the
//!   configured client-region × service-region latency plus the measured
//!   round trip to the region's endpoints (the health probes' RTT EWMA);
//!   regions without a usable endpoint are skipped (failover), a region
//!   that came back is used again only after `failback_seconds`, and a
//!   region in use is kept until another is better by more than
//!   `hysteresis_ms`.
//!
//! The dispatcher applies the choice per service (`upstream::Service`
//! holds the per-service state); [`GeoRoutingPolicy::route`] applies it to
//! the regions of the latency table alone, as the seed's example does:
//!
//! ```
//! use aether_gateway::{GeoRoutingPolicy, RegionLatencyProfile, RoutedRequest};
//! # let request = http::Request::new(());
//! let policy = GeoRoutingPolicy::new(vec![
//!     RegionLatencyProfile { region: "us-east".into(), latency_ms: 20 },
//!     RegionLatencyProfile { region: "eu-west".into(), latency_ms: 80 },
//! ]);
//! let routed = policy.route(&request);
//! assert_eq!(routed.region.as_deref(), Some("us-east"));
//! assert_eq!(routed.reason.as_str(), "nearest");
//! ```

pub mod cache;
pub mod choose;
pub mod locate;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub use choose::{Candidate, Reason};
pub use locate::{LocatedBy, Location};

/// A region's expected latency, in the seed's flat form: from any client
/// region without a row of its own in the latency table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionLatencyProfile {
    /// The service region.
    pub region: String,
    /// Expected latency to it, in milliseconds.
    pub latency_ms: u32,
}

/// A region, as an index into the policy's region names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub u16);

/// Where a request goes and why: the result of [`GeoRoutingPolicy::route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedRequest {
    /// The client's region, when it could be found.
    pub client_region: Option<Arc<str>>,
    /// How the client's region was found.
    pub located_by: LocatedBy,
    /// The chosen service region (`None`: no region can serve).
    pub region: Option<Arc<str>>,
    /// Why.
    pub reason: Reason,
    /// The chosen region's expected latency from the client, in ms.
    pub expected_latency_ms: Option<u32>,
}

/// The client address a request came from and whether its socket peer is
/// a trusted proxy: put in a request's extensions for
/// [`GeoRoutingPolicy::route`] (the gateway's pipeline passes it directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The resolved client address.
    pub ip: IpAddr,
    /// The socket peer is in `[server] trusted_proxies` (its region header
    /// is believed).
    pub peer_trusted: bool,
}

/// What the pipeline passes the dispatcher with a request: the client's
/// region and the session's sticky region, already resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GeoHints {
    /// The client's region.
    pub client: Option<RegionId>,
    /// The region the client's session asked to stay in.
    pub sticky: Option<RegionId>,
}

/// The region a response came from and why (in the response's extensions
/// when `sticky = "cookie"`; the `x-aether-region` header always says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChosenRegion {
    /// The region of the endpoint that answered.
    pub region: RegionId,
    /// Why it was chosen.
    pub reason: Reason,
    /// The service had more than one region to choose from.
    pub choice: bool,
}

/// How a session keeps its region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// No stickiness: every request is routed afresh.
    Off,
    /// A cookie of this name holds the region; the gateway sets it.
    Cookie(String),
    /// The client sends the region back in this header (taken from the
    /// `x-aether-region` response header).
    Header(HeaderName),
}

/// Latency of a client-region/service-region pair not in the table.
pub const UNKNOWN_LATENCY_MS: u32 = 1000;
/// Regions a policy can name at most (region ids fit the GeoIP cache).
pub const MAX_REGIONS: usize = 1024;
/// Regions one service spans at most (a request's failover order lives on
/// the stack).
pub const MAX_SERVICE_REGIONS: usize = 16;

const NONE: u32 = u32::MAX;

/// Chooses the region each request goes to.
#[derive(Debug)]
pub struct GeoRoutingPolicy {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, RegionId>,
    /// `latency[client * n + service]`, `NONE` where not configured.
    latency: Vec<u32>,
    /// The flat profile list: for client regions without a row.
    default_row: Vec<u32>,
    pub(crate) locator: locate::Locator,
    /// A region in use is kept unless another is better by more than this.
    pub hysteresis_ms: u32,
    /// A region that came back is used again only after this long.
    pub failback: Duration,
    /// Latency of pairs the table does not give (same region: 0).
    pub unknown_latency_ms: u32,
    /// Session stickiness.
    pub sticky: Sticky,
    /// `x-aether-region` values, `[region][reason]`: no formatting per request.
    header_values: Vec<[HeaderValue; 6]>,
    /// `Set-Cookie` values per region, with `sticky = "cookie"`.
    cookie_values: Vec<Option<HeaderValue>>,
}

impl GeoRoutingPolicy {
    /// A policy from the seed's flat latency list: the regions it names,
    /// their latency from every client, no client location rules.
    pub fn new(profiles: Vec<RegionLatencyProfile>) -> Self {
        let mut b = GeoBuilder::new();
        for p in &profiles {
            b.default_latency(&p.region, p.latency_ms);
        }
        b.build()
    }

    /// Start a policy with location rules and a full latency table.
    pub fn builder() -> GeoBuilder {
        GeoBuilder::new()
    }

    /// Where `request` goes among the regions of the latency table (all
    /// taken as healthy: the dispatcher adds health, load and measured
    /// latency per service). The client is located from its [`ClientInfo`]
    /// extension, or placed in the default region without one.
    pub fn route<B>(&self, request: &http::Request<B>) -> RoutedRequest {
        let loc = match request.extensions().get::<ClientInfo>() {
            Some(c) => self.locate(c.ip, request.headers(), c.peer_trusted),
            None => Location {
                region: self.locator.default,
                by: LocatedBy::Default,
            },
        };
        let regions: Vec<RegionId> = (0..self.names.len() as u16)
            .map(RegionId)
            .filter(|r| self.is_service_region(*r))
            .collect();
        let candidates: Vec<Candidate> = regions
            .iter()
            .map(|&r| Candidate {
                cost_ms: self.expected_latency_ms(loc.region, r),
                usable: true,
                settled: true,
            })
            .collect();
        let chosen = choose::choose(&candidates, None, self.hysteresis_ms);
        RoutedRequest {
            client_region: loc.region.map(|r| self.name(r).clone()),
            located_by: loc.by,
            region: chosen.map(|(i, _)| self.name(regions[i]).clone()),
            reason: chosen.map_or(Reason::NoHealthyRegion, |(_, why)| why),
            expected_latency_ms: chosen.map(|(i, _)| candidates[i].cost_ms),
        }
    }

    /// Locate a client (see [`locate`]).
    pub fn locate(&self, ip: IpAddr, headers: &HeaderMap, peer_trusted: bool) -> Location {
        self.locator
            .locate(ip, headers, peer_trusted, |n| self.id(n))
    }

    /// The region of this name.
    pub fn id(&self, name: &str) -> Option<RegionId> {
        self.ids.get(name).copied()
    }

    /// The name of a region.
    ///
    /// # Panics
    /// When `r` is not a region of this policy.
    pub fn name(&self, r: RegionId) -> &Arc<str> {
        &self.names[usize::from(r.0)]
    }

    /// Every region the policy knows, by id.
    pub fn regions(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The region clients go to when nothing else locates them.
    pub fn default_region(&self) -> Option<RegionId> {
        self.locator.default
    }

    /// The header trusted proxies name the client's region in.
    pub fn region_header(&self) -> Option<&HeaderName> {
        self.locator.header.as_ref()
    }

    /// Configured latency from `client` to `service` (table row, else the
    /// default row, else 0 within a region, else [`Self::unknown_latency_ms`]).
    pub fn expected_latency_ms(&self, client: Option<RegionId>, service: RegionId) -> u32 {
        let n = self.names.len();
        let s = usize::from(service.0);
        // Ids of another policy (a library caller's mistake) count as unknown.
        let client = client.filter(|c| usize::from(c.0) < n);
        if s >= n {
            return self.unknown_latency_ms;
        }
        if let Some(c) = client {
            let v = self.latency[usize::from(c.0) * n + s];
            if v != NONE {
                return v;
            }
        }
        match self.default_row[s] {
            NONE if client == Some(service) => 0,
            NONE => self.unknown_latency_ms,
            v => v,
        }
    }

    /// The configured latency of a pair, if the table (or the default row,
    /// for `client = None`) has it.
    pub fn configured_latency_ms(
        &self,
        client: Option<RegionId>,
        service: RegionId,
    ) -> Option<u32> {
        let s = usize::from(service.0);
        let v = match client {
            Some(c) => self.latency[usize::from(c.0) * self.names.len() + s],
            None => self.default_row[s],
        };
        (v != NONE).then_some(v)
    }

    fn is_service_region(&self, r: RegionId) -> bool {
        let n = self.names.len();
        let s = usize::from(r.0);
        self.default_row[s] != NONE || (0..n).any(|c| self.latency[c * n + s] != NONE)
    }

    /// The `x-aether-region` value for a region and reason.
    pub fn header_value(&self, r: RegionId, why: Reason) -> &HeaderValue {
        &self.header_values[usize::from(r.0)][why.index()]
    }

    /// The sticky region a request asks for, if stickiness is on.
    pub fn sticky_region(&self, headers: &HeaderMap) -> Option<RegionId> {
        match &self.sticky {
            Sticky::Off => None,
            Sticky::Header(h) => {
                let v = headers.get(h)?.to_str().ok()?;
                // The response header's form (`eu-west; reason=...`) is accepted as sent back.
                self.id(v.split(';').next().unwrap_or("").trim())
            }
            Sticky::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| self.id(v.trim())),
        }
    }

    /// The `Set-Cookie` value that keeps a session in `r` (with
    /// `sticky = "cookie"`).
    pub fn sticky_cookie(&self, r: RegionId) -> Option<&HeaderValue> {
        self.cookie_values.get(usize::from(r.0))?.as_ref()
    }
}

/// Builds a [`GeoRoutingPolicy`]; region names are interned as they are met.
#[derive(Debug)]
pub struct GeoBuilder {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, RegionId>,
    pairs: Vec<(RegionId, RegionId, u32)>,
    default_row: Vec<(RegionId, u32)>,
    header: Option<HeaderName>,
    networks: Vec<(IpNet, RegionId)>,
    countries: HashMap<[u8; 2], RegionId>,
    continents: HashMap<[u8; 2], RegionId>,
    mmdb: Option<maxminddb::Reader<Vec<u8>>>,
    cache_entries: usize,
    default: Option<RegionId>,
    hysteresis_ms: u32,
    failback: Duration,
    unknown_latency_ms: u32,
    sticky: Sticky,
}

/// A builder error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeoError {
    /// More regions than [`MAX_REGIONS`].
    #[error("more than {MAX_REGIONS} regions")]
    TooManyRegions,
    /// Not a two-letter ISO code.
    #[error("{0:?} is not a two-letter code")]
    BadCode(String),
    /// A region name that cannot go in a header.
    #[error("region name {0:?} must be 1-64 letters, digits, '-', '_' or '.'")]
    BadRegionName(String),
}

impl GeoBuilder {
    fn new() -> Self {
        GeoBuilder {
            names: Vec::new(),
            ids: HashMap::new(),
            pairs: Vec::new(),
            default_row: Vec::new(),
            header: None,
            networks: Vec::new(),
            countries: HashMap::new(),
            continents: HashMap::new(),
            mmdb: None,
            cache_entries: 65_536,
            default: None,
            hysteresis_ms: 20,
            failback: Duration::from_secs(30),
            unknown_latency_ms: UNKNOWN_LATENCY_MS,
            sticky: Sticky::Off,
        }
    }

    /// Intern a region name.
    ///
    /// # Errors
    /// [`GeoError::BadRegionName`] for a name that is empty, longer than 64
    /// bytes or has other characters than letters, digits, `-`, `_`, `.`;
    /// [`GeoError::TooManyRegions`] past [`MAX_REGIONS`].
    pub fn region(&mut self, name: &str) -> Result<RegionId, GeoError> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(GeoError::BadRegionName(name.to_owned()));
        }
        if self.names.len() >= MAX_REGIONS {
            return Err(GeoError::TooManyRegions);
        }
        let id = RegionId(self.names.len() as u16);
        let name: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, id);
        Ok(id)
    }

    fn region_or_skip(&mut self, name: &str) -> Option<RegionId> {
        match self.region(name) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "region ignored");
                None
            }
        }
    }

    /// Latency from any client region without a row to `service` (the seed's flat list).
    pub fn default_latency(&mut self, service: &str, ms: u32) -> &mut Self {
        if let Some(s) = self.region_or_skip(service) {
            self.default_row.push((s, ms));
        }
        self
    }

    /// Latency from clients in `client` to endpoints in `service`.
    ///
    /// # Errors
    /// As [`GeoBuilder::region`].
    pub fn latency(&mut self, client: &str, service: &str, ms: u32) -> Result<&mut Self, GeoError> {
        let c = self.region(client)?;
        let s = self.region(service)?;
        self.pairs.push((c, s, ms));
        Ok(self)
    }

    /// The region of clients nothing else locates.
    ///
    /// # Errors
    /// As [`GeoBuilder::region`].
    pub fn default_region(&mut self, name: &str) -> Result<&mut Self, GeoError> {
        self.default = Some(self.region(name)?);
        Ok(self)
    }

    /// Believe this header from trusted proxies: a region name or a country code.
    pub fn region_header(&mut self, name: HeaderName) -> &mut Self {
        self.header = Some(name);
        self
    }

    /// Clients in `net` are in `region` (the most specific network wins).
    ///
    /// # Errors
    /// As [`GeoBuilder::region`].
    pub fn network(&mut self, net: IpNet, region: &str) -> Result<&mut Self, GeoError> {
        let r = self.region(region)?;
        self.networks.push((net.trunc(), r));
        Ok(self)
    }

    /// Clients the GeoIP database places in `country` (ISO 3166-1 alpha-2) are in `region`.
    ///
    /// # Errors
    /// [`GeoError::BadCode`], or as [`GeoBuilder::region`].
    pub fn country(&mut self, country: &str, region: &str) -> Result<&mut Self, GeoError> {
        let c = locate::code(country).ok_or_else(|| GeoError::BadCode(country.to_owned()))?;
        let r = self.region(region)?;
        self.countries.insert(c, r);
        Ok(self)
    }

    /// Clients on `continent` (`AF`, `AN`, `AS`, `EU`, `NA`, `OC`, `SA`)
    /// whose country has no rule are in `region`.
    ///
    /// # Errors
    /// [`GeoError::BadCode`], or as [`GeoBuilder::region`].
    pub fn continent(&mut self, continent: &str, region: &str) -> Result<&mut Self, GeoError> {
        let c = locate::code(continent).ok_or_else(|| GeoError::BadCode(continent.to_owned()))?;
        let r = self.region(region)?;
        self.continents.insert(c, r);
        Ok(self)
    }

    /// Look clients up in this MaxMind-format database.
    pub fn mmdb(&mut self, reader: maxminddb::Reader<Vec<u8>>) -> &mut Self {
        self.mmdb = Some(reader);
        self
    }

    /// GeoIP cache slots (rounded up to a power of two). Default 65536.
    pub fn cache_entries(&mut self, n: usize) -> &mut Self {
        self.cache_entries = n;
        self
    }

    /// Keep a region in use unless another is better by more than this. Default 20 ms.
    pub fn hysteresis_ms(&mut self, ms: u32) -> &mut Self {
        self.hysteresis_ms = ms;
        self
    }

    /// Use a region that came back only after this long. Default 30 s.
    pub fn failback(&mut self, d: Duration) -> &mut Self {
        self.failback = d;
        self
    }

    /// Latency of pairs the table does not give. Default [`UNKNOWN_LATENCY_MS`].
    pub fn unknown_latency_ms(&mut self, ms: u32) -> &mut Self {
        self.unknown_latency_ms = ms;
        self
    }

    /// Session stickiness. Default off.
    pub fn sticky(&mut self, s: Sticky) -> &mut Self {
        self.sticky = s;
        self
    }

    /// The policy.
    pub fn build(&mut self) -> GeoRoutingPolicy {
        let n = self.names.len();
        let mut latency = vec![NONE; n * n];
        for &(c, s, ms) in &self.pairs {
            latency[usize::from(c.0) * n + usize::from(s.0)] = ms;
        }
        let mut default_row = vec![NONE; n];
        for &(s, ms) in &self.default_row {
            default_row[usize::from(s.0)] = ms;
        }
        let networks = locate::Networks::new(&self.networks);
        let header_values = self
            .names
            .iter()
            .map(|name| {
                Reason::ALL.map(|why| {
                    HeaderValue::from_str(&format!("{name}; reason={why}"))
                        .expect("region names are checked header-safe")
                })
            })
            .collect();
        let cookie_values = self
            .names
            .iter()
            .map(|name| match &self.sticky {
                Sticky::Cookie(c) => {
                    HeaderValue::from_str(&format!("{c}={name}; Path=/; HttpOnly; SameSite=Lax"))
                        .ok()
                }
                _ => None,
            })
            .collect();
        let mut locator = locate::Locator::new(self.cache_entries);
        locator.header = self.header.take();
        locator.networks = networks;
        locator.countries = std::mem::take(&mut self.countries);
        locator.continents = std::mem::take(&mut self.continents);
        locator.mmdb = self.mmdb.take();
        locator.default = self.default;
        GeoRoutingPolicy {
            names: self.names.clone(),
            ids: self.ids.clone(),
            latency,
            default_row,
            locator,
            hysteresis_ms: self.hysteresis_ms,
            failback: self.failback,
            unknown_latency_ms: self.unknown_latency_ms,
            sticky: self.sticky.clone(),
            header_values,
            cookie_values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> GeoRoutingPolicy {
        let mut b = GeoRoutingPolicy::builder();
        b.default_region("us-east").unwrap();
        b.latency("us-east", "us-east", 10).unwrap();
        b.latency("us-east", "eu-west", 80).unwrap();
        b.latency("eu-west", "us-east", 80).unwrap();
        b.latency("eu-west", "eu-west", 10).unwrap();
        b.network("198.51.100.0/24".parse().unwrap(), "eu-west")
            .unwrap();
        b.network("198.51.100.128/25".parse().unwrap(), "ap-south")
            .unwrap();
        b.country("de", "eu-west").unwrap();
        b.region_header(HeaderName::from_static("x-aether-region"));
        b.build()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_specific_network_wins_then_the_default() {
        let p = policy();
        let h = HeaderMap::new();
        let at = |s: &str| p.locate(ip(s), &h, false);
        assert_eq!(at("198.51.100.7").region, p.id("eu-west"));
        assert_eq!(at("198.51.100.7").by, LocatedBy::Network);
        assert_eq!(at("198.51.100.200").region, p.id("ap-south"));
        assert_eq!(at("203.0.113.1").region, p.id("us-east"));
        assert_eq!(at("203.0.113.1").by, LocatedBy::Default);
    }

    #[test]
    fn the_region_header_counts_only_from_trusted_peers() {
        let p = policy();
        let mut h = HeaderMap::new();
        h.insert("x-aether-region", HeaderValue::from_static("eu-west"));
        assert_eq!(
            p.locate(ip("203.0.113.1"), &h, false).by,
            LocatedBy::Default
        );
        let trusted = p.locate(ip("203.0.113.1"), &h, true);
        assert_eq!(
            (trusted.region, trusted.by),
            (p.id("eu-west"), LocatedBy::Header)
        );
        // A country code, as CDNs send, through the country rules.
        h.insert("x-aether-region", HeaderValue::from_static("DE"));
        assert_eq!(
            p.locate(ip("203.0.113.1"), &h, true).region,
            p.id("eu-west")
        );
        // Behind a proxy that appends, the last value (the proxy's) counts.
        h.insert("x-aether-region", HeaderValue::from_static("eu-west"));
        h.append("x-aether-region", HeaderValue::from_static("us-east"));
        assert_eq!(
            p.locate(ip("203.0.113.1"), &h, true).region,
            p.id("us-east")
        );
        // Unknown values are ignored, not trusted blindly.
        h.insert("x-aether-region", HeaderValue::from_static("mars-1"));
        assert_eq!(p.locate(ip("203.0.113.1"), &h, true).by, LocatedBy::Default);
    }

    #[test]
    fn latency_comes_from_the_row_then_the_default_row_then_the_rules() {
        let mut b = GeoRoutingPolicy::builder();
        b.latency("eu-west", "us-east", 80).unwrap();
        b.default_latency("us-east", 30);
        let ap = b.region("ap-south").unwrap();
        let p = b.build();
        let (eu, us) = (p.id("eu-west"), p.id("us-east").unwrap());
        assert_eq!(p.expected_latency_ms(eu, us), 80);
        assert_eq!(p.expected_latency_ms(Some(ap), us), 30);
        assert_eq!(p.expected_latency_ms(None, us), 30);
        assert_eq!(p.expected_latency_ms(Some(ap), ap), 0);
        assert_eq!(p.expected_latency_ms(eu, ap), UNKNOWN_LATENCY_MS);
    }

    #[test]
    fn route_picks_the_nearest_table_region() {
        let p = policy();
        let mut req = http::Request::new(());
        req.extensions_mut().insert(ClientInfo {
            ip: ip("198.51.100.7"),
            peer_trusted: false,
        });
        let r = p.route(&req);
        assert_eq!(r.client_region.as_deref(), Some("eu-west"));
        assert_eq!(r.region.as_deref(), Some("eu-west"));
        assert_eq!(r.reason, Reason::Nearest);
        assert_eq!(r.expected_latency_ms, Some(10));
        // ap-south has no latency entries: it is a client region only.
        assert!(!p.is_service_region(p.id("ap-south").unwrap()));
    }

    #[test]
    fn header_values_and_sticky_regions() {
        let mut b = GeoRoutingPolicy::builder();
        b.latency("us-east", "eu-west", 80).unwrap();
        b.sticky(Sticky::Cookie("aether-region".into()));
        let p = b.build();
        let eu = p.id("eu-west").unwrap();
        assert_eq!(
            p.header_value(eu, Reason::Failover),
            "eu-west; reason=failover"
        );
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; aether-region=eu-west"),
        );
        assert_eq!(p.sticky_region(&h), Some(eu));
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("aether-region=nowhere"),
        );
        assert_eq!(p.sticky_region(&h), None);
        assert_eq!(
            p.sticky_cookie(eu).unwrap(),
            "aether-region=eu-west; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(p.sticky_cookie(RegionId(99)), None);
        assert!(GeoRoutingPolicy::builder().region("a b").is_err());
        assert!(GeoRoutingPolicy::builder().country("DEU", "x").is_err());
    }
}
