//! Placeholder until the balancer module lands: round robin for every policy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What a balancer needs to know about one endpoint.
pub trait Load {
    /// Relative weight, >= 1.
    fn weight(&self) -> u32;
    /// Requests in flight.
    fn in_flight(&self) -> u32;
    /// Latency estimate in ns.
    fn latency_ns(&self, now: Duration) -> u64;
    /// Stable identity.
    fn identity(&self) -> u64;
}

impl<T: Load> Load for std::sync::Arc<T> {
    fn weight(&self) -> u32 {
        (**self).weight()
    }
    fn in_flight(&self) -> u32 {
        (**self).in_flight()
    }
    fn latency_ns(&self, now: Duration) -> u64 {
        (**self).latency_ns(now)
    }
    fn identity(&self) -> u64 {
        (**self).identity()
    }
}

/// Endpoint choice policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancePolicy {
    /// Round robin.
    RoundRobin,
    /// P2C least request.
    LeastRequest,
    /// P2C peak EWMA.
    PeakEwma,
    /// Maglev.
    ConsistentHash,
}

/// A balancer.
#[derive(Debug)]
pub struct Balancer {
    policy: BalancePolicy,
    next: AtomicUsize,
}

impl Balancer {
    /// Build.
    pub fn new<E: Load>(policy: BalancePolicy, _endpoints: &[E]) -> Self {
        Balancer {
            policy,
            next: AtomicUsize::new(0),
        }
    }
    /// The policy.
    pub fn policy(&self) -> BalancePolicy {
        self.policy
    }
    /// Pick.
    pub fn pick<E: Load>(
        &self,
        endpoints: &[E],
        _hash: Option<u64>,
        usable: impl Fn(usize) -> bool,
        _now: Duration,
    ) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| (start + k) % n).find(|&i| usable(i))
    }
}

/// Stable hash.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Peak EWMA.
#[derive(Debug)]
pub struct PeakEwma {
    v: std::sync::atomic::AtomicU64,
}

impl PeakEwma {
    /// New.
    pub fn new(_decay: Duration) -> Self {
        PeakEwma {
            v: std::sync::atomic::AtomicU64::new(0),
        }
    }
    /// Observe.
    pub fn observe(&self, rtt: Duration, _now: Duration) {
        self.v.store(rtt.as_nanos() as u64, Ordering::Relaxed);
    }
    /// Get.
    pub fn get_ns(&self, _now: Duration) -> u64 {
        self.v.load(Ordering::Relaxed)
    }
}
