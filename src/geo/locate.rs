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

/// A multiplicative hasher for prefix keys (already well spread integers;
/// SipHash's DoS resistance buys nothing for operator-written keys).
#[derive(Default)]
pub(crate) struct PrefixHasher(u64);

impl std::hash::Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64((v as u64) ^ ((v >> 64) as u64).rotate_left(29));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type PrefixMap = HashMap<u128, RegionId, std::hash::BuildHasherDefault<PrefixHasher>>;

/// `[[geo.networks]]` as one hash map per prefix length, longest first:
/// a lookup costs one probe per distinct length, however many rules.
#[derive(Debug, Default)]
pub(crate) struct Networks {
    v4: Vec<(u8, PrefixMap)>,
    v6: Vec<(u8, PrefixMap)>,
}

impl Networks {
    pub(crate) fn new(rules: &[(IpNet, RegionId)]) -> Self {
        let mut n = Networks::default();
        for (net, r) in rules {
            let (table, bits, addr) = match net {
                IpNet::V4(v4) => (&mut n.v4, 32, u128::from(u32::from(v4.network()))),
                IpNet::V6(v6) => (&mut n.v6, 128, u128::from(v6.network())),
            };
            let len = net.prefix_len();
            let key = mask(addr, bits, len);
            let at = match table.iter().position(|(l, _)| *l == len) {
                Some(i) => i,
                None => {
                    table.push((len, PrefixMap::default()));
                    table.len() - 1
                }
            };
            // The first rule for a network wins (config refuses duplicates).
            table[at].1.entry(key).or_insert(*r);
        }
        n.v4.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        n.v6.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
        n
    }

    pub(crate) fn find(&self, ip: IpAddr) -> Option<RegionId> {
        let (table, bits, addr) = match ip {
            IpAddr::V4(v4) => (&self.v4, 32, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => (&self.v6, 128, u128::from(v6)),
        };
        table
            .iter()
            .find_map(|(len, map)| map.get(&mask(addr, bits, *len)).copied())
    }

    pub(crate) fn len(&self) -> usize {
        self.v4.iter().chain(&self.v6).map(|(_, m)| m.len()).sum()
    }
}

/// The top `len` of `bits` bits of `addr`.
fn mask(addr: u128, bits: u8, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr >> (bits - len) << (bits - len)
    }
}

/// Finds the client's region.
pub struct Locator {
    pub(crate) header: Option<HeaderName>,
    pub(crate) networks: Networks,
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
            networks: Networks::default(),
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
        // The last value: a proxy that appends (rather than replaces) puts
        // its own after the client's, as with X-Forwarded-For.
        if peer_trusted
            && let Some(name) = &self.header
            && let Some(r) = headers
                .get_all(name)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.header_region(v.trim(), by_name))
        {
            return Location {
                region: Some(r),
                by: LocatedBy::Header,
            };
        }
        if let Some(r) = self.networks.find(ip) {
            return Location {
                region: Some(r),
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
        if ip.is_ipv6() && db.metadata().ip_version == 4 {
            // An IPv4-only database has nothing on IPv6 clients (and its
            // reader would build an error for each).
            return None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The per-length maps answer as a scan of the rules would: the
        /// most specific network containing the address, the first rule
        /// for a network written twice.
        #[test]
        fn networks_find_the_most_specific_rule(
            rules in proptest::collection::vec((proptest::num::u32::ANY, 0u8..=32, 0u16..4), 0..40),
            v6_rules in proptest::collection::vec((proptest::num::u128::ANY, 0u8..=128, 0u16..4), 0..10),
            probes in proptest::collection::vec(proptest::num::u32::ANY, 1..50),
        ) {
            let mut all: Vec<(IpNet, RegionId)> = rules
                .iter()
                .map(|&(a, l, r)| (IpNet::V4(ipnet::Ipv4Net::new(a.into(), l).unwrap().trunc()), RegionId(r)))
                .collect();
            all.extend(v6_rules.iter().map(|&(a, l, r)| {
                (IpNet::V6(ipnet::Ipv6Net::new(a.into(), l).unwrap().trunc()), RegionId(r))
            }));
            let n = Networks::new(&all);
            for p in probes {
                // Probes near the rules' networks as well as anywhere.
                for ip in [IpAddr::V4(p.into()), IpAddr::V4((rules.first().map_or(0, |r| r.0) ^ (p & 0xFF)).into())] {
                    let expected = all
                        .iter()
                        .enumerate()
                        .filter(|(_, (net, _))| net.contains(&ip))
                        .max_by_key(|(i, (net, _))| (net.prefix_len(), std::cmp::Reverse(*i)))
                        .map(|(_, (_, r))| *r);
                    proptest::prop_assert_eq!(n.find(ip), expected);
                }
            }
        }
    }
}
