//! Peak-EWMA latency, as in Finagle and linkerd: a slower sample is taken at
//! once (so a struggling endpoint sheds load immediately), faster samples
//! pull the estimate down exponentially with a time constant.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The decay time constant linkerd and Finagle use.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// Peak-EWMA latency of one endpoint, lock-free.
///
/// The estimate (f64 nanoseconds, as bits) and the time of its last update
/// are two separate atomics updated by plain loads and stores, not a CAS
/// loop: two responses observed at the same moment may lose one of their
/// samples, and a reader may pair a value with a neighbouring timestamp.
/// Both only shift the estimate by what one sample or a few microseconds of
/// decay would, which a load-balancing heuristic tolerates; a CAS loop would
/// make every response of a hot endpoint contend on one cache line.
#[derive(Debug)]
pub struct PeakEwma {
    estimate_bits: AtomicU64,
    updated_ns: AtomicU64,
    decay_ns: f64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl PeakEwma {
    /// An estimate with no data yet, decaying with time constant `decay` (use [`DEFAULT_DECAY`] if unsure).
    pub fn new(decay: Duration) -> Self {
        PeakEwma {
            estimate_bits: AtomicU64::new(0f64.to_bits()),
            updated_ns: AtomicU64::new(0),
            // A zero time constant would divide by zero; 1 ns means "only
            // the latest sample counts", which is what zero asks for.
            decay_ns: nanos(decay).max(1) as f64,
        }
    }

    /// Folds in one response's round-trip time `rtt`, observed at `now`.
    pub fn observe(&self, rtt: Duration, now: Duration) {
        let rtt = nanos(rtt) as f64;
        let now = nanos(now);
        let prev = f64::from_bits(self.estimate_bits.load(Ordering::Relaxed));
        let next = if rtt > prev {
            rtt
        } else {
            let w = self.weight(now);
            prev * w + rtt * (1.0 - w)
        };
        self.estimate_bits.store(next.to_bits(), Ordering::Relaxed);
        self.updated_ns.store(now, Ordering::Relaxed);
    }

    /// The estimate in nanoseconds at `now` (0 = no data yet).
    ///
    /// With no new samples it decays toward zero with the same time
    /// constant, as Finagle's does: an endpoint avoided for being slow gets
    /// no samples, and without this it would be avoided forever.
    pub fn get_ns(&self, now: Duration) -> u64 {
        let value = f64::from_bits(self.estimate_bits.load(Ordering::Relaxed));
        // Float-to-int `as` saturates (and maps NaN to 0), which is the
        // clamping wanted here.
        (value * self.weight(nanos(now))) as u64
    }

    /// How much of the last estimate is still current at `now`.
    fn weight(&self, now: u64) -> f64 {
        let elapsed = now.saturating_sub(self.updated_ns.load(Ordering::Relaxed));
        (-(elapsed as f64) / self.decay_ns).exp()
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma::new(DEFAULT_DECAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_without_data() {
        let e = PeakEwma::default();
        assert_eq!(e.get_ns(Duration::ZERO), 0);
        assert_eq!(e.get_ns(Duration::from_secs(100)), 0);
    }

    #[test]
    fn a_higher_sample_is_taken_at_once() {
        let e = PeakEwma::default();
        let t = Duration::from_secs(1);
        e.observe(MS, t);
        assert_eq!(e.get_ns(t), 1_000_000);
        e.observe(50 * MS, t + MS);
        assert_eq!(e.get_ns(t + MS), 50_000_000);
    }

    #[test]
    fn lower_samples_pull_it_down_with_the_time_constant() {
        let decay = Duration::from_secs(10);
        let e = PeakEwma::new(decay);
        let t0 = Duration::from_secs(5);
        e.observe(10 * MS, t0);
        e.observe(MS, t0 + decay);
        // One time constant later the old value keeps a weight of 1/e.
        let w = (-1f64).exp();
        let expected = 10e6 * w + 1e6 * (1.0 - w);
        let got = e.get_ns(t0 + decay) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.01,
            "{got} vs {expected}"
        );
        // A sample right after barely moves it.
        e.observe(MS, t0 + decay + Duration::from_micros(1));
        let again = e.get_ns(t0 + decay + Duration::from_micros(1)) as f64;
        assert!((again - expected).abs() <= expected * 0.01);
    }

    #[test]
    fn without_samples_it_decays_toward_zero() {
        let decay = Duration::from_secs(10);
        let e = PeakEwma::new(decay);
        e.observe(10 * MS, Duration::ZERO);
        let expected = 10e6 * (-1f64).exp();
        let got = e.get_ns(decay) as f64;
        assert!((got - expected).abs() <= expected * 0.01);
        assert_eq!(e.get_ns(100 * decay), 0);
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let e = PeakEwma::new(Duration::ZERO);
        e.observe(Duration::MAX, Duration::MAX);
        assert_eq!(e.get_ns(Duration::MAX), u64::MAX);
        e.observe(Duration::ZERO, Duration::ZERO);
        let _ = e.get_ns(Duration::ZERO);
        let e = PeakEwma::new(Duration::MAX);
        e.observe(MS, Duration::MAX);
        assert_eq!(e.get_ns(Duration::ZERO), 1_000_000);
    }
}
