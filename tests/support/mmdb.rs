//! Real MaxMind-format (`.mmdb`) GeoIP databases built at test time.
//!
//! A thin wrapper over the `mmdb-writer` crate, which writes an IPv6 tree
//! with IPv4 under `::/96` (plus the `::ffff:0:0/96`, 6to4 and Teredo aliases
//! real GeoLite2 files have), so `maxminddb::Reader` finds IPv4 and IPv6
//! addresses alike. `mmdb-writer` is last-write-wins (a wider network
//! inserted after a narrower one paints over it); this wrapper inserts in
//! order of prefix length, so the most specific network wins whatever order
//! the test adds them in.
//!
//! ```ignore
//! let db = MmdbBuilder::new("GeoLite2-Country")
//!     .country("198.51.0.0/16", "US", "NA")
//!     .country("198.51.100.0/24", "DE", "EU")
//!     .country("2001:db8::/32", "JP", "AS");
//! db.write(&dir.path().join("country.mmdb"));
//! ```

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmdb_writer::Writer;
use mmdb_writer::ipnet::IpNet;
use serde_json::{Value, json};

/// A GeoIP database under construction: networks and their records.
#[derive(Debug, Clone)]
pub struct MmdbBuilder {
    database_type: String,
    build_epoch: Option<u64>,
    records: Vec<(IpNet, Value)>,
}

impl MmdbBuilder {
    /// An empty database of this type (e.g. `"GeoLite2-Country"`,
    /// `"GeoLite2-City"`); `ip_version` 6, language `en`.
    pub fn new(database_type: &str) -> Self {
        MmdbBuilder {
            database_type: database_type.to_owned(),
            build_epoch: None,
            records: Vec::new(),
        }
    }

    /// `cidr` (IPv4 or IPv6; host bits ignored) → the GeoLite2 Country shape
    /// `{"country": {"iso_code": country}, "continent": {"code": continent}}`.
    pub fn country(self, cidr: &str, country: &str, continent: &str) -> Self {
        self.record(
            cidr,
            json!({
                "country": {"iso_code": country},
                "continent": {"code": continent},
            }),
        )
    }

    /// Like [`country`](Self::country), plus `"city": {"names": {"en": city}}`
    /// as in GeoLite2 City.
    pub fn city(self, cidr: &str, country: &str, continent: &str, city: &str) -> Self {
        self.record(
            cidr,
            json!({
                "country": {"iso_code": country},
                "continent": {"code": continent},
                "city": {"names": {"en": city}},
            }),
        )
    }

    /// `cidr` → any record (maps, strings, bools, non-negative integers,
    /// floats, arrays; negative integers are not an MMDB type).
    pub fn record(mut self, cidr: &str, value: Value) -> Self {
        let net: IpNet = cidr
            .parse()
            .unwrap_or_else(|e| panic!("bad CIDR {cidr:?}: {e}"));
        self.records.push((net, value));
        self
    }

    /// Fix the metadata's `build_epoch` (Unix seconds); default: now.
    pub fn build_epoch(mut self, secs: u64) -> Self {
        self.build_epoch = Some(secs);
        self
    }

    /// The database file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let epoch = self
            .build_epoch
            .map_or_else(SystemTime::now, |s| UNIX_EPOCH + Duration::from_secs(s));
        let mut writer = Writer::builder(self.database_type.as_str())
            .description(&[("en", "aether-gateway test database")])
            .build_epoch(epoch)
            .build();
        // Widest first (IPv4 at its depth in the IPv6 tree); the sort is
        // stable, so of two identical networks the one added last wins.
        let mut records: Vec<&(IpNet, Value)> = self.records.iter().collect();
        records.sort_by_key(|(net, _)| match net {
            IpNet::V4(v4) => 96 + v4.prefix_len(),
            IpNet::V6(v6) => v6.prefix_len(),
        });
        for (net, value) in records {
            writer
                .insert(*net, value)
                .unwrap_or_else(|e| panic!("insert {net}: {e}"));
        }
        writer.to_bytes().expect("mmdb serializes")
    }

    /// Write the database file to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_bytes())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
