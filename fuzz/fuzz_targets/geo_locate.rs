//! Client location and stickiness from hostile request headers: never a
//! panic, the region header believed only from a trusted peer, and every
//! region found (located or sticky) one the policy knows.
#![no_main]

use std::net::IpAddr;

use aether_gateway::GeoRoutingPolicy;
use aether_gateway::geo::{LocatedBy, Sticky};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn policy(sticky: Sticky) -> GeoRoutingPolicy {
    let mut b = GeoRoutingPolicy::builder();
    b.default_region("us-east").unwrap();
    b.latency("us-east", "eu-west", 80).unwrap();
    b.latency("eu-west", "eu-west", 10).unwrap();
    b.network("198.51.100.0/24".parse().unwrap(), "eu-west").unwrap();
    b.network("2001:db8::/32".parse().unwrap(), "eu-west").unwrap();
    b.country("DE", "eu-west").unwrap();
    b.region_header(HeaderName::from_static("x-aether-region"));
    b.cache_entries(64);
    b.sticky(sticky);
    b.build()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let (ip_bytes, rest) = data.split_at(16);
    let ip_bytes: [u8; 16] = ip_bytes.try_into().unwrap();
    let ip = if rest[0] & 1 == 0 {
        IpAddr::V4([ip_bytes[0], ip_bytes[1], ip_bytes[2], ip_bytes[3]].into())
    } else {
        IpAddr::V6(ip_bytes.into())
    };
    let trusted = rest[0] & 2 != 0;
    let mut headers = HeaderMap::new();
    for (i, chunk) in rest[1..].split(|&b| b == b'\n').enumerate().take(8) {
        let Ok(v) = HeaderValue::from_bytes(chunk) else { continue };
        let name = match i % 3 {
            0 => "x-aether-region",
            1 => "cookie",
            _ => "x-aether-sticky-region",
        };
        headers.append(name, v);
    }
    for sticky in [
        Sticky::Cookie("aether-region".into()),
        Sticky::Header(HeaderName::from_static("x-aether-sticky-region")),
    ] {
        let p = policy(sticky);
        let loc = p.locate(ip, &headers, trusted);
        if !trusted {
            assert_ne!(loc.by, LocatedBy::Header);
        }
        if let Some(r) = loc.region {
            assert!(usize::from(r.0) < p.regions().len());
        }
        if let Some(r) = p.sticky_region(&headers) {
            assert!(usize::from(r.0) < p.regions().len());
            assert!(p.sticky_cookie(r).is_some() || matches!(p.sticky, Sticky::Header(_)));
        }
    }
});
