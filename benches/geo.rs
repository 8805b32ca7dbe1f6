//! Geo routing per request: locating the client (GeoIP with a warm cache,
//! a cache miss that walks the database, a CIDR rule) and choosing the
//! region of a three-region service (health, capacity, configured +
//! measured latency, hysteresis state).

#[path = "../tests/support/mmdb.rs"]
#[allow(dead_code)]
mod mmdb;

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use aether_gateway::GeoRoutingPolicy;
use aether_gateway::router::ServiceTarget;
use aether_gateway::upstream::{Endpoint, HostPolicy, PoolConfig, Service, UpstreamProtocol};
use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;

const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

fn policy(db: &std::path::Path, cache_entries: usize) -> Arc<GeoRoutingPolicy> {
    let mut b = GeoRoutingPolicy::builder();
    b.default_region("us-east").unwrap();
    for c in REGIONS {
        for (i, s) in REGIONS.iter().enumerate() {
            let ms = if c == *s { 10 } else { 80 + 20 * i as u32 };
            b.latency(c, s, ms).unwrap();
        }
    }
    b.network("198.51.100.0/24".parse().unwrap(), "eu-west")
        .unwrap();
    b.country("DE", "eu-west").unwrap();
    b.country("US", "us-east").unwrap();
    b.country("IN", "ap-south").unwrap();
    b.mmdb(maxminddb::Reader::open_readfile(db).unwrap());
    b.cache_entries(cache_entries);
    Arc::new(b.build())
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.mmdb");
    // A few thousand networks, so a lookup walks a realistic tree depth.
    let mut w = mmdb::MmdbBuilder::new("GeoLite2-Country");
    for i in 0..4096u32 {
        let (cc, cont) = [("DE", "EU"), ("US", "NA"), ("IN", "AS")][(i % 3) as usize];
        let net = format!("{}.{}.0.0/16", 1 + i / 256, i % 256);
        w = w.country(&net, cc, cont);
    }
    w.write(&db);

    let warm = policy(&db, 65_536);
    let headers = HeaderMap::new();
    let ip: IpAddr = "3.7.1.1".parse().unwrap();
    warm.locate(ip, &headers, false);
    c.bench_function("geo/locate: GeoIP, warm cache", |b| {
        b.iter(|| black_box(warm.locate(black_box(ip), &headers, false)))
    });
    c.bench_function("geo/locate: CIDR rule", |b| {
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        b.iter(|| black_box(warm.locate(black_box(ip), &headers, false)))
    });
    // Every lookup a new /24, and the cache is one slot: always a miss.
    let cold = policy(&db, 1);
    let mut n = 0u32;
    c.bench_function("geo/locate: GeoIP, cache miss (database walk)", |b| {
        b.iter(|| {
            n = n.wrapping_add(256);
            let ip = IpAddr::V4((0x0100_0000 + (n % 0x1000_0000)).into());
            black_box(cold.locate(ip, &headers, false))
        })
    });

    let cfg = PoolConfig::for_protocol(UpstreamProtocol::Http1);
    let eps = (0..12u16)
        .map(|i| {
            Arc::new(Endpoint::new(
                ([127, 0, 0, 1], 9000 + i).into(),
                Some(REGIONS[usize::from(i % 3)].to_owned()),
                cfg.clone(),
            ))
        })
        .collect();
    let service = Service::new(
        ServiceTarget::WorldService,
        eps,
        UpstreamProtocol::Http1,
        HostPolicy::Preserve,
    )
    .with_geo(Arc::clone(&warm));
    let eu = warm.id("eu-west");
    assert_eq!(service.route_region(eu, None).unwrap().0, eu.unwrap());
    c.bench_function("geo/choose: 3 regions x 4 endpoints", |b| {
        b.iter(|| black_box(service.route_region(black_box(eu), None)))
    });
    c.bench_function("geo/locate + choose (warm cache)", |b| {
        b.iter(|| {
            let loc = warm.locate(black_box(ip), &headers, false);
            black_box(service.route_region(loc.region, None))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
