//! The in-process rate-limit store stays bounded: a million distinct keys
//! fit a stated budget, idle keys are forgotten, and the key cap holds.
//!
//! Memory is measured exactly, by a counting allocator in this test binary
//! (its own process: no other test allocates meanwhile), not by RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aether_gateway::clock::ManualClock;
use aether_gateway::{RateLimitPolicy, RateLimiter};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests measure one process-wide counter: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The budget the docs state: 64 MiB per million keys of one rule.
const BUDGET_PER_MILLION: usize = 64 * 1024 * 1024;

fn ip(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        (i >> 16) as u16,
        i as u16,
    ))
}

#[test]
fn a_million_keys_fit_the_budget_and_are_forgotten_when_idle() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let clock = ManualClock::new(1_000);
    let limiter = RateLimiter::new(RateLimitPolicy {
        window_seconds: 60,
        max_requests: 60,
    })
    .with_clock(clock.clone())
    .with_max_keys(2_000_000);
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..1_000_000 {
        assert!(limiter.check(ip(i)).allowed);
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(limiter.len(), 1_000_000);
    assert!(
        used <= BUDGET_PER_MILLION,
        "1 M keys took {} MiB (budget {} MiB)",
        used >> 20,
        BUDGET_PER_MILLION >> 20
    );
    eprintln!(
        "1 M keys: {:.1} MiB ({} B/key)",
        used as f64 / 1048576.0,
        used / 1_000_000
    );
    // One request each: whole again after one interval (1 s); swept then.
    clock.advance_by(Duration::from_millis(999));
    assert_eq!(limiter.sweep(), 1_000_000);
    clock.advance_by(Duration::from_millis(1));
    assert_eq!(limiter.sweep(), 0);
    let left = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    assert!(left < 1024 * 1024, "{left} bytes left after the sweep");
}

#[test]
fn the_key_cap_bounds_memory_under_a_flood_of_new_keys() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let clock = ManualClock::new(1_000);
    let limiter = RateLimiter::new(RateLimitPolicy {
        window_seconds: 60,
        max_requests: 10,
    })
    .with_clock(clock)
    .with_max_keys(10_000);
    for i in 0..10_000 {
        assert!(limiter.check(ip(i)).allowed);
    }
    let at_cap = LIVE.load(Ordering::Relaxed);
    // 200 000 more distinct keys: no growth; they share one overflow
    // counter, which lets its burst of 10 through and then refuses.
    let mut allowed = 0;
    for i in 10_000..210_000 {
        allowed += u32::from(limiter.check(ip(i)).allowed);
    }
    assert_eq!(limiter.len(), 10_000);
    assert_eq!(allowed, 10);
    assert!(LIVE.load(Ordering::Relaxed) <= at_cap + 4096);
    // Known keys keep their own counters meanwhile.
    assert!(limiter.check(ip(5)).allowed);
}
