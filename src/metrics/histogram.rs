//! A histogram of durations whose `observe` touches only atomics.
//!
//! prometheus-client's own `Histogram` takes a mutex on every observation;
//! on two shared CPUs serving many connections that mutex is a global lock
//! on the request path. This one keeps a relaxed counter per bucket and the
//! sum in nanoseconds, and implements the crate's `EncodeMetric` so it
//! encodes (and sits in a `Family`) exactly like the crate's type.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the buckets in seconds (the last, `+Inf`, is implied):
/// from half a millisecond (a gateway hop) to ten seconds (a slow upstream).
pub const BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const BUCKETS_NS: [u64; 14] = {
    let mut ns = [0u64; 14];
    let mut i = 0;
    while i < 14 {
        // Exact: every bound is a whole number of microseconds.
        ns[i] = (BUCKETS_SECONDS[i] * 1e6) as u64 * 1000;
        i += 1;
    }
    ns
};

#[derive(Debug, Default)]
struct Inner {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; 15],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// A duration histogram with fixed buckets ([`BUCKETS_SECONDS`]); clones
/// share their counts.
#[derive(Debug, Clone, Default)]
pub struct DurationHistogram {
    inner: Arc<Inner>,
}

impl DurationHistogram {
    /// Count one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKETS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BUCKETS_NS.len());
        let inner = &self.inner;
        inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        inner.sum_ns.fetch_add(ns, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.inner;
        let mut buckets = [(0.0, 0u64); 15];
        for (i, b) in buckets.iter_mut().enumerate() {
            let bound = BUCKETS_SECONDS.get(i).copied().unwrap_or(f64::INFINITY);
            *b = (bound, inner.buckets[i].load(Ordering::Relaxed));
        }
        // The count is the buckets' sum, so a scrape racing an observation
        // still shows `_count` equal to the `+Inf` bucket.
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = inner.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(500)); // exactly on the first bound
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_secs(60));
        let counts: Vec<u64> = h
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[14], 1);
        assert_eq!(h.count(), 3);
        assert_eq!(BUCKETS_NS[0], 500_000);
        assert_eq!(BUCKETS_NS[13], 10_000_000_000);
    }

    #[test]
    fn encodes_cumulative_buckets() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(3));
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register("t", "test", h);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("# TYPE t histogram\n"), "{out}");
        assert!(out.contains("t_count 2\n"), "{out}");
        assert!(out.contains("t_sum 0.006\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"0.0025\"} 0\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("t_bucket{le=\"+Inf\"} 2\n"), "{out}");
    }
}
