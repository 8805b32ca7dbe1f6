//! Passive outlier detection: real traffic ejects an endpoint that keeps
//! failing, for a time that grows when it keeps coming back bad.
//!
//! Times are monotonic milliseconds from the service's [`Clock`](crate::clock::Clock),
//! so tests move them exactly. The request path does one relaxed load
//! (`is_ejected`) and, on success, one load (the counter is only written
//! when it is not already zero, so healthy traffic does not bounce the
//! cache line between cores).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// When real traffic ejects an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Failures in a row (5xx, connect error, timeout, reset) that eject.
    pub consecutive_failures: u32,
    /// The first ejection lasts this long; the n-th in a row n times as long.
    pub base_ejection: Duration,
    /// No ejection lasts longer.
    pub max_ejection: Duration,
    /// At most this share of a service's endpoints is ejected at once (at
    /// least one may always be), so outlier detection cannot empty a service.
    pub max_ejection_percent: u8,
}

impl Default for OutlierDetection {
    /// Envoy's defaults, except `max_ejection_percent` (Envoy: 10 %, which
    /// with fewer than ten endpoints allows only one).
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

impl OutlierDetection {
    /// Whether one more endpoint may be ejected when `ejected` of `total` are.
    pub fn may_eject(&self, ejected: usize, total: usize) -> bool {
        ejected == 0 || (ejected + 1) * 100 <= usize::from(self.max_ejection_percent) * total
    }

    /// How long the ejection with this multiplier (1 = first) lasts.
    pub fn ejection_time(&self, multiplier: u32) -> Duration {
        self.base_ejection
            .saturating_mul(multiplier.max(1))
            .min(self.max_ejection)
    }
}

/// The passive-health counters of one endpoint.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive: AtomicU32,
    /// Monotonic ms when the current ejection ends; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Grows by one per ejection that follows the last one closely.
    multiplier: AtomicU32,
    ejections: AtomicU64,
}

impl OutlierState {
    /// True while an ejection lasts.
    #[inline]
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }

    /// When the current ejection ends (monotonic ms), if one lasts.
    pub fn ejected_until(&self, now_ms: u64) -> Option<u64> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        (until != 0 && now_ms < until).then_some(until)
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Failures in a row right now.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    /// A request succeeded.
    #[inline]
    pub fn success(&self) {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// A request failed; `may_eject` is asked (only) when the threshold is
    /// reached. Returns the ejection's length when this failure ejected.
    pub fn failure(
        &self,
        cfg: &OutlierDetection,
        now_ms: u64,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        // Failures while ejected (requests already on their way, or panic
        // routing) do not count: the endpoint comes back with a clean slate.
        if self.is_ejected(now_ms) {
            return None;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < cfg.consecutive_failures || !may_eject() {
            return None;
        }
        // A failure counted by a request that was already on its way when
        // the endpoint was ejected must not eject it twice: whoever resets
        // the counter ejects.
        if self
            .consecutive
            .compare_exchange(n, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        // An endpoint that fails again soon after its last ejection ended
        // stays out longer; one that behaved for `max_ejection` starts over.
        let last_end = self.ejected_until_ms.load(Ordering::Relaxed);
        let max_ms = duration_ms(cfg.max_ejection);
        let multiplier = if last_end != 0 && now_ms.saturating_sub(last_end) < max_ms {
            self.multiplier.load(Ordering::Relaxed).saturating_add(1)
        } else {
            1
        };
        self.multiplier.store(multiplier, Ordering::Relaxed);
        let time = cfg.ejection_time(multiplier);
        self.ejected_until_ms.store(
            now_ms.saturating_add(duration_ms(time)).max(1),
            Ordering::Relaxed,
        );
        self.ejections.fetch_add(1, Ordering::Relaxed);
        Some(time)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn ejects_after_exactly_n_failures_and_a_success_resets() {
        let s = OutlierState::default();
        let c = cfg();
        assert_eq!(s.failure(&c, 1_000, || true), None);
        assert_eq!(s.failure(&c, 1_000, || true), None);
        s.success();
        assert_eq!(s.failure(&c, 1_000, || true), None);
        assert_eq!(s.failure(&c, 1_000, || true), None);
        assert_eq!(s.failure(&c, 1_000, || true), Some(Duration::from_secs(10)));
        assert!(s.is_ejected(1_000));
        assert!(s.is_ejected(10_999));
        assert!(!s.is_ejected(11_000));
        assert_eq!(s.ejections(), 1);
    }

    #[test]
    fn ejection_time_grows_then_is_capped_and_resets_after_good_behaviour() {
        let s = OutlierState::default();
        let c = cfg();
        let eject = |now| {
            let mut r = None;
            for _ in 0..3 {
                r = s.failure(&c, now, || true);
            }
            r
        };
        assert_eq!(eject(0), Some(Duration::from_secs(10)));
        assert_eq!(eject(10_000), Some(Duration::from_secs(20)));
        // 3 × 10 s capped at 25 s.
        assert_eq!(eject(30_000), Some(Duration::from_secs(25)));
        // Back since 55 s; behaved for more than max_ejection: starts over.
        assert_eq!(eject(55_000 + 25_000), Some(Duration::from_secs(10)));
    }

    #[test]
    fn failures_while_ejected_do_not_extend_and_the_cap_is_honoured() {
        let s = OutlierState::default();
        let c = cfg();
        for _ in 0..3 {
            s.failure(&c, 0, || true);
        }
        for _ in 0..10 {
            assert_eq!(s.failure(&c, 5_000, || true), None);
        }
        assert_eq!(s.ejected_until(5_000), Some(10_000));
        let t = OutlierState::default();
        for _ in 0..10 {
            assert_eq!(t.failure(&c, 0, || false), None);
        }
        assert!(!t.is_ejected(0));
    }

    #[test]
    fn max_ejection_percent_allows_at_least_one() {
        let c = cfg();
        assert!(c.may_eject(0, 1));
        assert!(!c.may_eject(1, 2));
        assert!(c.may_eject(1, 4));
        assert!(!c.may_eject(2, 4));
        let ten = OutlierDetection {
            max_ejection_percent: 10,
            ..c
        };
        assert!(ten.may_eject(0, 4));
        assert!(!ten.may_eject(1, 4));
        assert!(ten.may_eject(1, 20));
    }
}
