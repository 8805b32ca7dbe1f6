//! Endpoint choice: which endpoint of a service a request goes to.
//!
//! Pure policy: no sockets, no tasks, no locks. A [`Balancer`] is built once
//! per endpoint set and shared by every request through `&self`; live
//! signals (in-flight counts, latency) are read through [`Load`] at pick
//! time, and everything else that rules an endpoint out (health, ejection,
//! circuit breaker, "already tried") is the caller's `usable` predicate.

mod ewma;
mod hash;
mod maglev;
mod schedule;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use ewma::{DEFAULT_DECAY, PeakEwma};
pub use hash::stable_hash;

use hash::{probe, reduce};
use maglev::{Maglev, PROBES};

/// Endpoints a balancer builds its schedule and table over; later ones are
/// still reachable through the fallback scan, but get no share of their own.
pub const MAX_ENDPOINTS: usize = 1 << 20;

/// Random candidate draws of the power-of-two-choices policies before they
/// scan for a usable endpoint instead.
const DRAWS: usize = 4;

/// What a balancer needs to know about one endpoint.
pub trait Load {
    /// Relative weight, >= 1 (0 is treated as 1).
    fn weight(&self) -> u32;
    /// Requests currently in flight to it.
    fn in_flight(&self) -> u32;
    /// Peak-EWMA latency estimate in nanoseconds at `now` (0 = no data yet).
    fn latency_ns(&self, now: Duration) -> u64;
    /// Stable identity for consistent hashing: the same endpoint must get the
    /// same value in every gateway process of a fleet (so do NOT use
    /// std's RandomState; use [`stable_hash`]).
    fn identity(&self) -> u64;
}

macro_rules! forward_load {
    ($($ty:ty),*) => {$(
        impl<T: Load + ?Sized> Load for $ty {
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
    )*};
}

// Services hold `Arc`ed endpoints; balancing a `&[Arc<E>]` must not need a copy.
forward_load!(&T, Box<T>, Arc<T>);

/// How a service chooses among its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancePolicy {
    /// Weighted round robin in an interleaved order.
    RoundRobin,
    /// Power of two choices on in-flight requests per weight.
    LeastRequest,
    /// Power of two choices on Peak-EWMA latency times load.
    PeakEwma,
    /// Maglev consistent hashing on the request's hash key.
    ConsistentHash,
}

/// Built once per endpoint set (rebuilt when endpoints are added/removed), shared by all requests (&self, atomics only).
///
/// Weights and identities are read when it is built; pass [`Balancer::pick`]
/// the same slice. Another slice still gets valid picks (indices out of
/// range are never returned), just not balanced ones.
pub struct Balancer {
    policy: BalancePolicy,
    /// Round robin (and hash-less consistent hashing).
    rr: Option<RoundRobin>,
    maglev: Option<Maglev>,
}

struct RoundRobin {
    /// Shared by every request: one contended cache line is the price of
    /// an exact order across threads. Wrapping at `usize::MAX` glitches the
    /// order once, harmlessly.
    next: AtomicUsize,
    /// One weighted cycle of indices; empty when weights are uniform and
    /// plain cycling over the slice does the same with no table.
    schedule: Box<[u32]>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("policy", &self.policy)
            .field(
                "schedule_len",
                &self.rr.as_ref().map(|rr| rr.schedule.len()),
            )
            .field("maglev", &self.maglev.is_some())
            .finish()
    }
}

impl Balancer {
    /// A balancer for `endpoints` (their weights and identities as of now).
    pub fn new<E: Load>(policy: BalancePolicy, endpoints: &[E]) -> Self {
        let endpoints = &endpoints[..endpoints.len().min(MAX_ENDPOINTS)];
        let needs_rr = matches!(
            policy,
            BalancePolicy::RoundRobin | BalancePolicy::ConsistentHash
        );
        let needs_table = policy == BalancePolicy::ConsistentHash;
        let weights = if needs_rr {
            schedule::reduced(endpoints.iter().map(Load::weight))
        } else {
            Vec::new()
        };
        let maglev = needs_table.then(|| {
            let ids: Vec<u64> = endpoints.iter().map(Load::identity).collect();
            Maglev::new(&ids, &weights)
        });
        let rr = needs_rr.then(|| RoundRobin {
            next: AtomicUsize::new(0),
            schedule: schedule::round_robin(weights).into_boxed_slice(),
        });
        Balancer { policy, rr, maglev }
    }

    /// The policy it was built for.
    pub fn policy(&self) -> BalancePolicy {
        self.policy
    }

    /// Index of the endpoint to use, or None when `usable(i)` is false for every i.
    ///
    /// `hash` is the request's hash key (ConsistentHash only; when None,
    /// ConsistentHash behaves like RoundRobin). `usable` folds in health,
    /// ejection, circuit breaker and "already tried": the result always
    /// satisfies it, and every policy ends in a full scan before giving up.
    pub fn pick<E: Load>(
        &self,
        endpoints: &[E],
        hash: Option<u64>,
        usable: impl Fn(usize) -> bool,
        now: Duration,
    ) -> Option<usize> {
        let len = endpoints.len();
        if len == 0 {
            return None;
        }
        match (self.policy, hash, &self.maglev) {
            (BalancePolicy::ConsistentHash, Some(h), Some(table)) => table
                .pick(h, len, &usable)
                // Most endpoints are out: a start fixed by the key keeps
                // even this fallback the same in every process.
                .or_else(|| scan(len, reduce(probe(h, PROBES), len), &usable)),
            (BalancePolicy::LeastRequest, ..) => p2c(endpoints, &usable, fewer_per_weight),
            (BalancePolicy::PeakEwma, ..) => {
                p2c(endpoints, &usable, |a: &E, b: &E| cheaper(a, b, now))
            }
            _ => self.round_robin(len, &usable),
        }
    }

    fn round_robin(&self, len: usize, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let Some(rr) = &self.rr else {
            return scan(len, 0, usable);
        };
        let schedule = &rr.schedule;
        let cycle = if schedule.is_empty() {
            len
        } else {
            schedule.len()
        };
        // An unusable endpoint's turn is skipped by taking the next turn
        // from the shared counter, not by walking on locally: walking would
        // hand all of its share to its successor in the order (twice the
        // load on one neighbour while an endpoint is down).
        for _ in 0..cycle.min(MAX_TURNS) {
            let turn = rr.next.fetch_add(1, Ordering::Relaxed);
            let i = if schedule.is_empty() {
                turn % len
            } else {
                schedule[turn % cycle] as usize
            };
            if i < len && usable(i) {
                return Some(i);
            }
        }
        // Most endpoints are out: any usable one, from a random start so no
        // neighbour is favoured.
        scan(len, fastrand::usize(..len), usable)
    }
}

/// Turns a round-robin pick takes from the counter before it scans.
const MAX_TURNS: usize = 64;

/// The first usable index from `start` on, wrapping once round `0..len`.
fn scan(len: usize, start: usize, usable: &impl Fn(usize) -> bool) -> Option<usize> {
    let start = start.min(len);
    (start..len).chain(0..start).find(|&i| usable(i))
}

/// A uniformly random usable index other than `not`, in a few draws.
fn draw(len: usize, not: Option<usize>, usable: &impl Fn(usize) -> bool) -> Option<usize> {
    (0..DRAWS).find_map(|_| {
        let i = match not {
            None => fastrand::usize(..len),
            // Draw among the others so the candidates are distinct.
            Some(a) if len >= 2 => {
                let j = fastrand::usize(..len - 1);
                j + usize::from(j >= a)
            }
            Some(_) => return None,
        };
        usable(i).then_some(i)
    })
}

/// Power of two choices: two distinct random usable candidates, the better
/// one by `better(a, b)` (a strictly better than b). It avoids the herd a
/// global "least loaded" causes when load figures lag, and needs no scan.
fn p2c<E: Load>(
    endpoints: &[E],
    usable: &impl Fn(usize) -> bool,
    better: impl Fn(&E, &E) -> bool,
) -> Option<usize> {
    let len = endpoints.len();
    if len == 1 {
        return usable(0).then_some(0);
    }
    // Draws that keep missing mean most endpoints are out; a scan from a
    // random start finds the few left without unbounded retries.
    let a = draw(len, None, usable).or_else(|| scan(len, fastrand::usize(..len), usable))?;
    let b = draw(len, Some(a), usable).or_else(|| {
        let start = fastrand::usize(..len);
        (start..len).chain(0..start).find(|&i| i != a && usable(i))
    });
    match b {
        Some(b) if better(&endpoints[b], &endpoints[a]) => Some(b),
        _ => Some(a),
    }
}

fn weight(e: &impl Load) -> u64 {
    u64::from(e.weight().max(1))
}

/// Load is `(in_flight + 1) / weight`: the `+ 1` makes weights count when
/// both are idle (0 / w would always tie). Cross-multiplied, so no division;
/// each product is below 2^64.
fn fewer_per_weight<E: Load>(a: &E, b: &E) -> bool {
    (u64::from(a.in_flight()) + 1) * weight(b) < (u64::from(b.in_flight()) + 1) * weight(a)
}

/// Cost is `latency * (in_flight + 1) / weight`. An endpoint with no data
/// yet is costed at the other candidate's latency, so it competes on load
/// alone: it gets traffic at once, and being one of two random candidates
/// caps it at about 2/n of picks, so it is not flooded.
fn cheaper<E: Load>(a: &E, b: &E, now: Duration) -> bool {
    let (la, lb) = match (a.latency_ns(now), b.latency_ns(now)) {
        (0, 0) => return fewer_per_weight(a, b),
        (0, l) | (l, 0) => (l, l),
        pair => pair,
    };
    // Below 2^64 * 2^32 * 2^32 = 2^128: no overflow.
    let cost = |latency: u64, e: &E, other: &E| {
        u128::from(latency) * (u128::from(e.in_flight()) + 1) * u128::from(weight(other))
    };
    cost(la, a, b) < cost(lb, b, a)
}

#[cfg(test)]
mod tests;
