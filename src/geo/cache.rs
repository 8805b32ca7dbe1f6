//! A fixed-size, lock-free cache of GeoIP answers per client prefix (IPv4
//! /24, IPv6 /48): one relaxed atomic load on a hit, no allocation ever, a
//! bounded footprint whatever the traffic (a flood of new addresses only
//! evicts).
//!
//! Each slot is one `u64` holding the whole entry — a valid bit, the family
//! and the exact prefix (so a hit can never be another prefix's answer) and
//! the answer — so a racing reader sees either the old entry or the new
//! one, never half of each.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of an IPv4 address the cache keys on.
pub const IPV4_PREFIX: u8 = 24;
/// Bits of an IPv6 address the cache keys on.
pub const IPV6_PREFIX: u8 = 48;

const VALID: u64 = 1 << 63;
const VALUE_BITS: u32 = 14;
const VALUE_MASK: u64 = (1 << VALUE_BITS) - 1;
/// Largest value a slot stores.
pub const MAX_VALUE: u16 = VALUE_MASK as u16;

/// The cache: `2^k` slots, direct-mapped.
#[derive(Debug)]
pub struct PrefixCache {
    slots: Box<[AtomicU64]>,
    shift: u32,
}

/// The prefix an address is cached under (family bit + up to 48 bits).
fn key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4) >> (32 - IPV4_PREFIX)),
        IpAddr::V6(v6) => (1 << 48) | (u128::from(v6) >> (128 - IPV6_PREFIX)) as u64,
    }
}

impl PrefixCache {
    /// A cache of at least `entries` slots (rounded up to a power of two,
    /// at least 2).
    pub fn new(entries: usize) -> Self {
        let n = entries.clamp(2, 1 << 24).next_power_of_two();
        PrefixCache {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            shift: 64 - n.trailing_zeros(),
        }
    }

    fn slot(&self, key: u64) -> &AtomicU64 {
        let i = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift;
        &self.slots[i as usize]
    }

    /// The value cached for `ip`'s prefix.
    #[inline]
    pub fn get(&self, ip: IpAddr) -> Option<u16> {
        let k = key(ip);
        let e = self.slot(k).load(Ordering::Relaxed);
        (e & VALID != 0 && (e & !VALID) >> VALUE_BITS == k).then_some((e & VALUE_MASK) as u16)
    }

    /// Cache `value` (at most [`MAX_VALUE`]) for `ip`'s prefix.
    pub fn put(&self, ip: IpAddr, value: u16) {
        debug_assert!(value <= MAX_VALUE);
        let k = key(ip);
        let e = VALID | (k << VALUE_BITS) | (u64::from(value) & VALUE_MASK);
        self.slot(k).store(e, Ordering::Relaxed);
    }

    /// Slots (for the admin API and tests).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_answer_per_prefix_and_never_another_prefixs() {
        let c = PrefixCache::new(4);
        assert_eq!(c.capacity(), 4);
        c.put(ip("198.51.100.7"), 3);
        assert_eq!(c.get(ip("198.51.100.200")), Some(3));
        assert_eq!(c.get(ip("198.51.101.7")), None);
        c.put(ip("2001:db8:1::1"), MAX_VALUE);
        assert_eq!(c.get(ip("2001:db8:1:ffff::9")), Some(MAX_VALUE));
        assert_eq!(c.get(ip("2001:db8:2::1")), None);
        // The IPv4 prefix 0.0.0.0/24 and the IPv6 prefix ::/48 differ.
        c.put(ip("0.0.0.1"), 1);
        assert_eq!(c.get(ip("::1")), None);
    }

    #[test]
    fn a_flood_only_evicts() {
        let c = PrefixCache::new(64);
        for i in 0..100_000u32 {
            c.put(IpAddr::V4((i << 8).into()), (i % 1000) as u16);
        }
        assert_eq!(c.capacity(), 64);
        let hits = (0..100_000u32)
            .filter(|i| c.get(IpAddr::V4((i << 8).into())) == Some((i % 1000) as u16))
            .count();
        assert!(hits <= 64, "{hits}");
    }

    proptest::proptest! {
        /// Whatever was stored and evicted, a hit is the latest value put
        /// for that exact prefix, never another prefix's.
        #[test]
        fn a_hit_is_the_latest_answer_for_that_prefix(
            ops in proptest::collection::vec((proptest::bool::ANY, proptest::num::u128::ANY, 0..=MAX_VALUE), 1..300),
            slots in 1usize..64,
        ) {
            let c = PrefixCache::new(slots);
            let mut model = std::collections::HashMap::new();
            let addr = |v6: bool, bits: u128| -> IpAddr {
                // Few distinct prefixes, so slots collide and prefixes repeat.
                if v6 {
                    IpAddr::V6(((bits % 7) << 80 | (bits & 0xFFFF)).into())
                } else {
                    IpAddr::V4((((bits % 7) as u32) << 8 | (bits as u32 & 0xFF)).into())
                }
            };
            for (v6, bits, value) in &ops {
                let ip = addr(*v6, *bits);
                c.put(ip, *value);
                model.insert(key(ip), *value);
                for (v6, bits, _) in &ops {
                    let probe = addr(*v6, *bits);
                    if let Some(got) = c.get(probe) {
                        proptest::prop_assert_eq!(Some(&got), model.get(&key(probe)));
                    }
                }
            }
        }
    }
}
