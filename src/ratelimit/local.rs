//! The in-process store: one TAT per key in a sharded concurrent map.
//!
//! No global lock: a check takes one shard's read lock and does a
//! compare-and-swap on the key's atomic TAT; only the first request of a new
//! key takes that shard's write lock. Keys whose TAT has passed are
//! indistinguishable from new ones and are swept; the number of keys is
//! capped, and keys beyond the cap share one overflow bucket per rule, so a
//! flood of distinct keys (random API keys) cannot grow memory without bound.
//!
//! The map holds a 64-bit keyed fingerprint of each key, not the key: 16
//! bytes an entry whatever the key's length, and no allocation per key. The
//! fingerprint is SipHash-1-3 under a random per-process key, so clients
//! cannot aim at a collision; a chance one (two live keys of one rule
//! sharing a counter) has a probability of about n²/2⁶⁵ — 3·10⁻⁸ with a
//! million live keys.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use super::LimitKey;
use super::gcra::{Gcra, Outcome};
use crate::clock::Clock;

/// Default cap on keys per rule.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// The fingerprint is already uniformly random: the map uses it as its
/// hash instead of hashing it again.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; stay a valid hasher for anything else.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One rule's counters.
pub(crate) struct LocalStore {
    map: DashMap<u64, AtomicU64, BuildHasherDefault<PassThrough>>,
    fingerprint: RandomState,
    /// Keys in `map` (kept beside it: `DashMap::len` locks every shard).
    keys: AtomicUsize,
    max_keys: usize,
    /// Shared by every key that arrives while the map is full.
    overflow: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("keys", &self.keys.load(Ordering::Relaxed))
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl LocalStore {
    pub(crate) fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        LocalStore {
            map: DashMap::default(),
            fingerprint: RandomState::new(),
            keys: AtomicUsize::new(0),
            max_keys: max_keys.max(1),
            overflow: AtomicU64::new(0),
            clock,
        }
    }

    /// Nanoseconds on the store's clock. A new key's TAT is 0, which the
    /// GCRA treats as "now": no sentinel needed.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.monotonic().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Decide one request for `key`.
    pub(crate) fn check(&self, gcra: &Gcra, key: &LimitKey) -> Outcome {
        let now = self.now_ns();
        let fp = self.fingerprint.hash_one(key);
        if let Some(tat) = self.map.get(&fp) {
            return update(gcra, &tat, now);
        }
        if self.keys.load(Ordering::Relaxed) >= self.max_keys {
            return update(gcra, &self.overflow, now);
        }
        let entry = self.map.entry(fp).or_insert_with(|| {
            self.keys.fetch_add(1, Ordering::Relaxed);
            AtomicU64::new(0)
        });
        update(gcra, &entry, now)
    }

    /// Forget keys whose bucket is full again; returns how many remain.
    pub(crate) fn sweep(&self) -> usize {
        let now = self.now_ns();
        let mut removed = 0;
        self.map.retain(|_, tat| {
            let keep = tat.load(Ordering::Relaxed) > now;
            removed += usize::from(!keep);
            keep
        });
        self.keys.fetch_sub(removed, Ordering::Relaxed);
        if removed > 0 {
            self.map.shrink_to_fit();
        }
        self.keys.load(Ordering::Relaxed)
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    pub(crate) fn max_keys(&self) -> usize {
        self.max_keys
    }
}

/// The GCRA step as a compare-and-swap loop on one TAT.
fn update(gcra: &Gcra, tat: &AtomicU64, now: u64) -> Outcome {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let (outcome, next) = gcra.decide(current, now);
        if next == current {
            return outcome;
        }
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return outcome,
            Err(actual) => current = actual,
        }
    }
}
