//! Where a client is, in order of trust: a region header set by a trusted
//! proxy or CDN, the operator's CIDR rules, a GeoIP database, the default.

use std::collections::HashMap;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use serde::Deserialize;

use super::RegionId;
use super::cache::{IPV4_PREFIX, IPV6_PREFIX, MAX_VALUE, PrefixCache};

/// How the client's region was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocatedBy {
    /// The region header of a trusted proxy.
    Header,
    /// A `[[geo.networks]]` rule.
    Network,
    /// The GeoIP database (country or continent rule).
    GeoIp,
    /// Nothing matched: `default_region`.
    Default,
}

impl LocatedBy {
    /// Its name in logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            LocatedBy::Header => "header",
            LocatedBy::Network => "network",
            LocatedBy::GeoIp => "geoip",
            LocatedBy::Default => "default",
        }
    }
}

/// A client's region and how it was found (`region` is `None` when nothing
/// matched and there is no default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The client's region.
    pub region: Option<RegionId>,
    /// How it was found.
    pub by: LocatedBy,
}

/// An ISO code (country or continent) as two upper-case ASCII letters.
pub(crate) fn code(s: &str) -> Option<[u8; 2]> {
    match s.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// The GeoLite2/GeoIP2 fields the locator reads (Country, City and
/// Enterprise databases all have them); borrowed, so a lookup allocates
/// nothing.
#[derive(Deserialize)]
struct GeoRecord<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    continent: Option<ContinentCode<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct ContinentCode<'a> {
    code: Option<&'a str>,
}

/// Finds the client's region.
pub struct Locator {
    pub(crate) header: Option<HeaderName>,
    /// Longest prefix first, so the first match is the most specific.
    pub(crate) networks: Vec<(IpNet, RegionId)>,
    pub(crate) countries: HashMap<[u8; 2], RegionId>,
    pub(crate) continents: HashMap<[u8; 2], RegionId>,
    pub(crate) mmdb: Option<maxminddb::Reader<Vec<u8>>>,
    pub(crate) cache: PrefixCache,
    pub(crate) default: Option<RegionId>,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locator")
            .field("header", &self.header)
            .field("networks", &self.networks.len())
            .field("countries", &self.countries.len())
            .field("continents", &self.continents.len())
            .field(
                "mmdb",
                &self.mmdb.as_ref().map(|m| &m.metadata().database_type),
            )
            .field("default", &self.default)
            .finish()
    }
}

impl Locator {
    pub(crate) fn new(cache_entries: usize) -> Self {
        Locator {
            header: None,
            networks: Vec::new(),
            countries: HashMap::new(),
            continents: HashMap::new(),
            mmdb: None,
            cache: PrefixCache::new(cache_entries),
            default: None,
        }
    }

    /// Locate a client. The region header is read only when the socket
    /// peer is a trusted proxy (`peer_trusted`); `by_name` resolves a region
    /// name given in it.
    pub(crate) fn locate(
        &self,
        ip: IpAddr,
        headers: &HeaderMap,
        peer_trusted: bool,
        by_name: impl Fn(&str) -> Option<RegionId>,
    ) -> Location {
        if peer_trusted
            && let Some(name) = &self.header
            && let Some(r) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.header_region(v.trim(), by_name))
        {
            return Location {
                region: Some(r),
                by: LocatedBy::Header,
            };
        }
        if let Some((_, r)) = self.networks.iter().find(|(n, _)| n.contains(&ip)) {
            return Location {
                region: Some(*r),
                by: LocatedBy::Network,
            };
        }
        if self.mmdb.is_some() {
            let cached = self.cache.get(ip).map(|v| match v {
                0 => None,
                v => Some(RegionId(v - 1)),
            });
            let region = match cached {
                Some(r) => r,
                None => self.lookup(ip),
            };
            if let Some(r) = region {
                return Location {
                    region: Some(r),
                    by: LocatedBy::GeoIp,
                };
            }
        }
        Location {
            region: self.default,
            by: LocatedBy::Default,
        }
    }

    /// A region name, or a country code (as CDNs send: `CF-IPCountry`)
    /// mapped by the country rules.
    fn header_region(
        &self,
        value: &str,
        by_name: impl Fn(&str) -> Option<RegionId>,
    ) -> Option<RegionId> {
        by_name(value).or_else(|| code(value).and_then(|c| self.countries.get(&c).copied()))
    }

    /// Ask the database, map the answer to a region, and cache it when the
    /// database's network covers the whole cache prefix.
    fn lookup(&self, ip: IpAddr) -> Option<RegionId> {
        let db = self.mmdb.as_ref()?;
        let Ok(found) = db.lookup(ip) else {
            return None;
        };
        let region = match found.decode::<GeoRecord<'_>>() {
            Ok(Some(rec)) => self.region_of(&rec),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(%ip, error = %e, "GeoIP record not readable");
                None
            }
        };
        let cache_prefix = match ip {
            IpAddr::V4(_) => IPV4_PREFIX,
            IpAddr::V6(_) => IPV6_PREFIX,
        };
        if let Ok(net) = found.network()
            && net.prefix() <= cache_prefix
        {
            let value = region.map_or(0, |r| r.0 + 1);
            if value <= MAX_VALUE {
                self.cache.put(ip, value);
            }
        }
        region
    }

    fn region_of(&self, rec: &GeoRecord<'_>) -> Option<RegionId> {
        let country = |c: &Option<IsoCode<'_>>| {
            c.as_ref()
                .and_then(|c| c.iso_code)
                .and_then(code)
                .and_then(|c| self.countries.get(&c).copied())
        };
        country(&rec.country)
            .or_else(|| {
                rec.continent
                    .as_ref()
                    .and_then(|c| c.code)
                    .and_then(code)
                    .and_then(|c| self.continents.get(&c).copied())
            })
            .or_else(|| country(&rec.registered_country))
    }
}
