//! The Generic Cell Rate Algorithm, as pure integer arithmetic on one
//! number per key: the theoretical arrival time (TAT).
//!
//! A rule allowing `max_requests` per `window` with a burst of `burst` has an
//! emission interval `T = window / max_requests` and a tolerance
//! `τ = T · (burst − 1)`. A request at `now` conforms when
//! `now ≥ max(TAT, now) − τ`; it then moves the TAT on by `T`. So requests
//! are smooth (one per `T` sustained), at most `burst` arrive at once, and
//! there is no window edge to double up on. The local store and the Redis
//! script (`redis.rs`) run exactly this arithmetic.

use std::time::Duration;

/// The parameters of one rule, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval `T`.
    pub interval_ns: u64,
    /// Tolerance `τ = T · (burst − 1)`.
    pub tolerance_ns: u64,
    /// Requests per window, for `RateLimit-Limit`.
    pub limit: u32,
    /// Most requests let through at once.
    pub burst: u32,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The request conforms.
    pub allowed: bool,
    /// Requests that would still conform right after this one.
    pub remaining: u32,
    /// Until the bucket is full again (the key is then forgotten).
    pub reset_after_ns: u64,
    /// Until the next request conforms (zero when `remaining > 0`).
    pub retry_after_ns: u64,
}

impl Gcra {
    /// `max_requests` per `window`, `burst` at once (both at least 1).
    ///
    /// Returns `None` for a zero window, zero counts, or an interval below
    /// one nanosecond.
    pub fn new(window: Duration, max_requests: u32, burst: u32) -> Option<Gcra> {
        if max_requests == 0 || burst == 0 {
            return None;
        }
        let window_ns = u64::try_from(window.as_nanos()).ok()?;
        let interval_ns = window_ns / u64::from(max_requests);
        if interval_ns == 0 {
            return None;
        }
        let tolerance_ns = interval_ns.checked_mul(u64::from(burst - 1))?;
        // TATs are monotonic ns plus τ + T: keep that far from overflowing
        // for centuries of uptime (2⁶² ns ≈ 146 years).
        if tolerance_ns.checked_add(interval_ns)? > 1 << 62 {
            return None;
        }
        Some(Gcra {
            interval_ns,
            tolerance_ns,
            limit: max_requests,
            burst,
        })
    }

    /// Decide a request at `now_ns` against the stored `tat_ns` (0 for a new
    /// key). Returns the outcome and the TAT to store (unchanged when refused).
    pub fn decide(&self, tat_ns: u64, now_ns: u64) -> (Outcome, u64) {
        let tat = tat_ns.max(now_ns);
        let allow_at = tat - self.tolerance_ns.min(tat);
        if now_ns < allow_at {
            let outcome = Outcome {
                allowed: false,
                remaining: 0,
                reset_after_ns: tat - now_ns,
                retry_after_ns: allow_at - now_ns,
            };
            return (outcome, tat_ns);
        }
        let new_tat = tat.saturating_add(self.interval_ns);
        // Capacity left: how many more intervals fit under now + τ + T.
        let headroom = now_ns
            .saturating_add(self.tolerance_ns)
            .saturating_add(self.interval_ns)
            .saturating_sub(new_tat);
        let remaining = u32::try_from(headroom / self.interval_ns).unwrap_or(u32::MAX);
        let outcome = Outcome {
            allowed: true,
            remaining,
            reset_after_ns: new_tat - now_ns,
            retry_after_ns: if remaining > 0 {
                0
            } else {
                // The next request conforms at new_tat − τ.
                new_tat
                    .saturating_sub(self.tolerance_ns)
                    .saturating_sub(now_ns)
            },
        };
        (outcome, new_tat)
    }
}

impl Gcra {
    /// `RateLimit-Limit`: the requests per window, or the burst when it is
    /// larger (so `Remaining` never exceeds `Limit`).
    pub fn reported_limit(&self) -> u32 {
        self.limit.max(self.burst)
    }
}

/// Whole seconds, rounded up (`Retry-After`, `RateLimit-Reset`).
pub fn ceil_seconds(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn run(g: &Gcra, times: &[u64]) -> Vec<Outcome> {
        let mut tat = 0;
        times
            .iter()
            .map(|&t| {
                let (o, next) = g.decide(tat, t);
                tat = next;
                o
            })
            .collect()
    }

    #[test]
    fn sixty_per_minute_burst_three_exactly() {
        let g = Gcra::new(Duration::from_secs(60), 60, 3).unwrap();
        assert_eq!((g.interval_ns, g.tolerance_ns), (S, 2 * S));
        let t0 = 1_000 * S;
        let o = run(&g, &[t0, t0, t0, t0]);
        assert_eq!(
            o.iter()
                .map(|o| (o.allowed, o.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        // After the third: full again in 3 s; the fourth may retry in 1 s.
        assert_eq!(o[2].reset_after_ns, 3 * S);
        assert_eq!(o[2].retry_after_ns, S);
        assert_eq!(o[3].retry_after_ns, S);
        assert_eq!(o[3].reset_after_ns, 3 * S);
    }

    #[test]
    fn refused_requests_cost_nothing_and_the_rate_is_smooth() {
        let g = Gcra::new(Duration::from_secs(60), 60, 1).unwrap();
        let t0 = 5 * S;
        // One per second: at t0, refused 1 ns before t0+1s, allowed at t0+1s.
        let o = run(&g, &[t0, t0 + S - 1, t0 + S, t0 + 2 * S - 1, t0 + 2 * S]);
        assert_eq!(
            o.iter().map(|o| o.allowed).collect::<Vec<_>>(),
            [true, false, true, false, true]
        );
        assert_eq!(o[1].retry_after_ns, 1);
        assert_eq!(ceil_seconds(o[1].retry_after_ns), 1);
    }

    #[test]
    fn no_double_burst_at_any_edge() {
        // 10 per 10 s, burst 10: a client that empties the bucket and keeps
        // asking gets exactly one more per second, never a fresh 10.
        let g = Gcra::new(Duration::from_secs(10), 10, 10).unwrap();
        let mut tat = 0;
        let mut allowed = 0;
        let start = 100 * S;
        for ms in 0..20_000u64 {
            let (o, next) = g.decide(tat, start + ms * 1_000_000);
            tat = next;
            allowed += u32::from(o.allowed);
        }
        // 10 at once, then one per second over the remaining 20 s (19 more,
        // the 20th second begins at 20 000 ms, outside the loop).
        assert_eq!(allowed, 10 + 19);
    }

    #[test]
    fn ceil_seconds_rounds_up() {
        assert_eq!(ceil_seconds(0), 0);
        assert_eq!(ceil_seconds(1), 1);
        assert_eq!(ceil_seconds(S), 1);
        assert_eq!(ceil_seconds(S + 1), 2);
    }

    #[test]
    fn bad_parameters() {
        // τ + T beyond 2⁶² ns: refused rather than overflowing later.
        assert!(Gcra::new(Duration::from_secs(60), 1, 307_445_735).is_none());
        assert!(Gcra::new(Duration::from_secs(10_000_000_000), 1, 2).is_none());
        assert!(Gcra::new(Duration::from_secs(60), 1, 1_000_000).is_some());
        assert!(Gcra::new(Duration::from_secs(60), 0, 1).is_none());
        assert!(Gcra::new(Duration::from_secs(60), 1, 0).is_none());
        assert!(Gcra::new(Duration::ZERO, 1, 1).is_none());
    }

    proptest! {
        /// Over any stretch of time, no more than burst + elapsed / T pass.
        #[test]
        fn never_more_than_burst_plus_rate(
            per_window in 1u32..1000,
            burst in 1u32..50,
            gaps in proptest::collection::vec(0u64..3_000_000_000, 1..300),
        ) {
            let g = Gcra::new(Duration::from_secs(60), per_window, burst).unwrap();
            let mut tat = 0;
            let mut now = 7 * S;
            let start = now;
            let mut allowed = 0u64;
            for gap in gaps {
                now += gap;
                let (o, next) = g.decide(tat, now);
                prop_assert!(o.remaining < burst);
                prop_assert!(o.reset_after_ns <= g.tolerance_ns + g.interval_ns);
                if !o.allowed {
                    prop_assert!(o.retry_after_ns > 0);
                    prop_assert_eq!(next, tat);
                }
                tat = next;
                allowed += u64::from(o.allowed);
            }
            prop_assert!(allowed <= u64::from(burst) + (now - start) / g.interval_ns);
        }
    }
}
