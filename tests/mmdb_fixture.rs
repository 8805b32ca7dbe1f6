//! `support::mmdb` writes databases that the `maxminddb` reader (the one the
//! gateway uses) reads back exactly: IPv4 and IPv6 networks, nested
//! networks with the most specific winning, and misses outside them.

mod support;

use std::net::IpAddr;

use maxminddb::{Reader, geoip2, path};
use support::mmdb::MmdbBuilder;

/// `(country.iso_code, continent.code, matched prefix length)` for `ip`,
/// `None` where the database has no data.
fn geo(reader: &Reader<Vec<u8>>, ip: &str) -> Option<(String, String, u8)> {
    let ip: IpAddr = ip.parse().unwrap();
    let result = reader.lookup(ip).unwrap();
    let prefix = result.network().unwrap().prefix();
    let country: Option<String> = result.decode_path(&path!["country", "iso_code"]).unwrap();
    let continent: Option<String> = result.decode_path(&path!["continent", "code"]).unwrap();
    assert_eq!(country.is_some(), result.has_data(), "{ip}");
    Some((country?, continent.unwrap(), prefix))
}

fn hit(country: &str, continent: &str, prefix: u8) -> Option<(String, String, u8)> {
    Some((country.to_owned(), continent.to_owned(), prefix))
}

#[test]
fn country_database_round_trips_through_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("GeoLite2-Country.mmdb");
    MmdbBuilder::new("GeoLite2-Country")
        // The narrower network first: the wider one added later must not
        // paint over it.
        .country("198.51.100.0/24", "DE", "EU")
        .country("198.51.0.0/16", "US", "NA")
        .country("2001:db8::/32", "JP", "AS")
        .build_epoch(1_700_000_000)
        .write(&file);

    let reader = Reader::open_readfile(&file).unwrap();
    reader.verify().unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.database_type, "GeoLite2-Country");
    assert_eq!(meta.ip_version, 6);
    assert_eq!(meta.binary_format_major_version, 2);
    assert_eq!(meta.build_epoch, 1_700_000_000);

    // Nested: the /24 wins inside it, the /16 everywhere else in it.
    assert_eq!(geo(&reader, "198.51.100.0"), hit("DE", "EU", 24));
    assert_eq!(geo(&reader, "198.51.100.255"), hit("DE", "EU", 24));
    assert_eq!(geo(&reader, "198.51.101.1"), hit("US", "NA", 24));
    assert_eq!(geo(&reader, "198.51.0.1"), hit("US", "NA", 18));
    assert_eq!(geo(&reader, "198.51.255.255"), hit("US", "NA", 17));
    // IPv6, and IPv4 spelled as IPv4-mapped IPv6 (the alias real files have).
    assert_eq!(geo(&reader, "2001:db8::1"), hit("JP", "AS", 32));
    assert_eq!(geo(&reader, "2001:db8:ffff::1"), hit("JP", "AS", 32));
    assert_eq!(geo(&reader, "::ffff:198.51.100.7"), hit("DE", "EU", 120));
    // Outside every network: no data, and no error.
    for ip in [
        "198.50.255.255",
        "198.52.0.0",
        "203.0.113.1",
        "2001:db9::1",
        "::1",
    ] {
        assert_eq!(geo(&reader, ip), None, "{ip}");
    }
}

#[test]
fn insertion_order_does_not_matter() {
    let a = MmdbBuilder::new("GeoLite2-Country")
        .country("198.51.0.0/16", "US", "NA")
        .country("198.51.100.0/24", "DE", "EU")
        .build_epoch(1)
        .to_bytes();
    let b = MmdbBuilder::new("GeoLite2-Country")
        .country("198.51.100.0/24", "DE", "EU")
        .country("198.51.0.0/16", "US", "NA")
        .build_epoch(1)
        .to_bytes();
    assert_eq!(a, b);
}

#[test]
fn city_database_decodes_as_geoip2_city() {
    let bytes = MmdbBuilder::new("GeoLite2-City")
        .city("192.0.2.0/24", "FR", "EU", "Paris")
        .city("2001:db8:1::/48", "CA", "NA", "Toronto")
        .to_bytes();
    let reader = Reader::from_source(bytes).unwrap();
    reader.verify().unwrap();

    let result = reader.lookup("192.0.2.9".parse().unwrap()).unwrap();
    let city: geoip2::City = result.decode().unwrap().unwrap();
    assert_eq!(city.country.iso_code, Some("FR"));
    assert_eq!(city.continent.code, Some("EU"));
    assert_eq!(city.city.names.english, Some("Paris"));

    let result = reader.lookup("2001:db8:1:2::3".parse().unwrap()).unwrap();
    let country: geoip2::Country = result.decode().unwrap().unwrap();
    assert_eq!(country.country.iso_code, Some("CA"));
    assert_eq!(country.continent.code, Some("NA"));
    assert_eq!(result.network().unwrap().to_string(), "2001:db8:1::/48");

    let miss = reader.lookup("192.0.3.1".parse().unwrap()).unwrap();
    assert!(!miss.has_data());
    assert!(miss.decode::<geoip2::Country>().unwrap().is_none());
}
