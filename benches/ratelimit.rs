//! The in-process rate-limit check: one existing key (the hot path), a mix
//! of many keys, two threads at once (on one key and on their own keys), and
//! governor's keyed limiter on the same work for comparison.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_gateway::ratelimit::LimitKey;
use aether_gateway::{RateLimitPolicy, RateLimiter};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn limiter() -> RateLimiter {
    // Generous enough that every check is allowed: the cost measured is the
    // check, not the refusal path.
    RateLimiter::new(RateLimitPolicy {
        window_seconds: 1,
        max_requests: 1_000_000_000,
    })
}

fn ips(n: u32) -> Vec<LimitKey> {
    (0..n)
        .map(|i| LimitKey::Ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
        .collect()
}

/// `threads` threads doing `iters` checks each; the time per check.
fn parallel(threads: usize, iters: u64, f: Arc<dyn Fn(usize, u64) + Send + Sync>) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = Arc::clone(&f);
            s.spawn(move || {
                for i in 0..iters {
                    f(t, i);
                }
            });
        }
    });
    start.elapsed()
}

fn local(c: &mut Criterion) {
    let l = limiter();
    let key = LimitKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    l.check_key(&key);
    c.bench_function("ratelimit/local/one_key", |b| {
        b.iter(|| black_box(l.check_key(black_box(&key))))
    });
    let user = LimitKey::User("player-7f3c2a".into());
    l.check_key(&user);
    c.bench_function("ratelimit/local/one_user", |b| {
        b.iter(|| black_box(l.check_key(black_box(&user))))
    });
    let keys = ips(100_000);
    for k in &keys {
        l.check_key(k);
    }
    let mut i = 0;
    c.bench_function("ratelimit/local/100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(l.check_key(&keys[i]))
        })
    });

    // Two threads: each check's wall time divided by the checks done in it
    // (so perfect scaling halves the figure).
    let shared = Arc::new((limiter(), key.clone(), ips(2)));
    let s = Arc::clone(&shared);
    c.bench_function("ratelimit/local/2_threads_same_key", |b| {
        b.iter_custom(|iters| {
            let s = Arc::clone(&s);
            parallel(
                2,
                iters,
                Arc::new(move |_, _| {
                    black_box(s.0.check_key(&s.1));
                }),
            ) / 2
        })
    });
    let s = Arc::clone(&shared);
    c.bench_function("ratelimit/local/2_threads_own_keys", |b| {
        b.iter_custom(|iters| {
            let s = Arc::clone(&s);
            parallel(
                2,
                iters,
                Arc::new(move |t, _| {
                    black_box(s.0.check_key(&s.2[t]));
                }),
            ) / 2
        })
    });
}

fn governor(c: &mut Criterion) {
    use governor::{Quota, RateLimiter as Gov};
    let q = Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap());
    let g = Gov::dashmap(q);
    let key = LimitKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    let _ = g.check_key(&key);
    c.bench_function("ratelimit/governor/one_key", |b| {
        b.iter(|| black_box(g.check_key(black_box(&key)).is_ok()))
    });
    // What the gateway needs from a check: the remaining allowance too.
    let gs = Gov::dashmap(q).with_middleware::<governor::middleware::StateInformationMiddleware>();
    let _ = gs.check_key(&key);
    c.bench_function("ratelimit/governor/one_key_with_remaining", |b| {
        b.iter(|| {
            black_box(
                gs.check_key(black_box(&key))
                    .map(|s| s.remaining_burst_capacity())
                    .unwrap_or(0),
            )
        })
    });
    let keys = ips(100_000);
    for k in &keys {
        let _ = g.check_key(k);
    }
    let mut i = 0;
    c.bench_function("ratelimit/governor/100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(g.check_key(&keys[i]).is_ok())
        })
    });
    let shared = Arc::new((Gov::dashmap(q), key));
    c.bench_function("ratelimit/governor/2_threads_same_key", |b| {
        b.iter_custom(|iters| {
            let s = Arc::clone(&shared);
            parallel(
                2,
                iters,
                Arc::new(move |_, _| {
                    black_box(s.0.check_key(&s.1).is_ok());
                }),
            ) / 2
        })
    });
}

criterion_group!(benches, local, governor);
criterion_main!(benches);
