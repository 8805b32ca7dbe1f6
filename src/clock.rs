//! Time as an input: policies that depend on time take a [`Clock`] so tests
//! can set it exactly instead of sleeping.
//!
//! Two readings: wall-clock seconds (token `exp`/`nbf`/`iat`) and a
//! monotonic duration (rate-limit arithmetic, which must never run backwards
//! when the wall clock is stepped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn unix_seconds(&self) -> u64;

    /// Time since an arbitrary fixed origin; never decreases.
    fn monotonic(&self) -> Duration;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_seconds(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn monotonic(&self) -> Duration {
        // quanta reads the TSC (calibrated once), a few ns, where
        // `Instant::now` is a clock_gettime call: this runs per rate-limit
        // check (measured in benches/ratelimit.rs).
        static ORIGIN: OnceLock<quanta::Instant> = OnceLock::new();
        ORIGIN.get_or_init(quanta::Instant::now).elapsed()
    }
}

/// A clock that moves only when told to; for tests.
///
/// ```
/// use aether_gateway::clock::{Clock, ManualClock};
/// use std::time::Duration;
/// let clock = ManualClock::new(1_000);
/// clock.advance(5);
/// assert_eq!(clock.unix_seconds(), 1_005);
/// clock.advance_by(Duration::from_millis(1_500));
/// assert_eq!(clock.unix_seconds(), 1_006);
/// assert_eq!(clock.monotonic(), Duration::from_millis(6_500));
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    /// Wall-clock nanoseconds since the Unix epoch.
    unix_nanos: AtomicU64,
    /// Nanoseconds since the clock was made.
    mono_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock showing `unix_seconds`, monotonic time zero.
    pub fn new(unix_seconds: u64) -> Arc<Self> {
        Arc::new(ManualClock {
            unix_nanos: AtomicU64::new(unix_seconds.saturating_mul(1_000_000_000)),
            mono_nanos: AtomicU64::new(0),
        })
    }

    /// Set the wall-clock time (the monotonic reading does not move).
    pub fn set(&self, unix_seconds: u64) {
        self.unix_nanos.store(
            unix_seconds.saturating_mul(1_000_000_000),
            Ordering::Relaxed,
        );
    }

    /// Move both readings forward by whole seconds.
    pub fn advance(&self, seconds: u64) {
        self.advance_by(Duration::from_secs(seconds));
    }

    /// Move both readings forward.
    pub fn advance_by(&self, d: Duration) {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.unix_nanos.fetch_add(n, Ordering::Relaxed);
        self.mono_nanos.fetch_add(n, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn unix_seconds(&self) -> u64 {
        self.unix_nanos.load(Ordering::Relaxed) / 1_000_000_000
    }

    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.mono_nanos.load(Ordering::Relaxed))
    }
}
