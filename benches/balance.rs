//! Endpoint choice: nanoseconds per pick for each policy over 10, 100 and
//! 1000 endpoints (all usable), consistent hashing with 10% of endpoints
//! unusable, and building a Maglev table for 1000 endpoints.

use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aether_gateway::upstream::balance::{BalancePolicy, Balancer, Load, PeakEwma, stable_hash};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// An endpoint as the gateway would hold one: live counters in atomics.
struct Endpoint {
    weight: AtomicU32,
    in_flight: AtomicU32,
    ewma: PeakEwma,
    id: u64,
}

impl Load for Endpoint {
    fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }
    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
    fn latency_ns(&self, now: Duration) -> u64 {
        self.ewma.get_ns(now)
    }
    fn identity(&self) -> u64 {
        self.id
    }
}

const NOW: Duration = Duration::from_secs(100);

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            let e = Endpoint {
                weight: AtomicU32::new(1),
                in_flight: AtomicU32::new((i % 7) as u32),
                ewma: PeakEwma::default(),
                id: stable_hash(format!("10.0.{}.{}:8080", i / 256, i % 256).as_bytes()),
            };
            // Latencies 1..=5 ms, observed a second ago.
            let rtt = Duration::from_millis(1 + (i % 5) as u64);
            e.ewma.observe(rtt, NOW - Duration::from_secs(1));
            e
        })
        .collect()
}

/// Precomputed request keys, cycled so hashing them is not what is timed.
fn keys() -> Vec<u64> {
    (0..4096u32)
        .map(|k| stable_hash(&k.to_le_bytes()))
        .collect()
}

fn picks(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("balance/pick");
    for n in [10, 100, 1000] {
        let eps = endpoints(n);
        for (name, policy) in [
            ("round_robin", BalancePolicy::RoundRobin),
            ("least_request", BalancePolicy::LeastRequest),
            ("peak_ewma", BalancePolicy::PeakEwma),
        ] {
            let b = Balancer::new(policy, &eps);
            g.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
                bench.iter(|| black_box(b.pick(&eps, None, |_| true, NOW)))
            });
        }
        let b = Balancer::new(BalancePolicy::ConsistentHash, &eps);
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::new("maglev", n), &n, |bench, _| {
            bench.iter(|| {
                k = (k + 1) & 4095;
                black_box(b.pick(&eps, Some(keys[k]), |_| true, NOW))
            })
        });
        let down: Vec<bool> = (0..n).map(|i| i % 10 == 3).collect();
        g.bench_with_input(
            BenchmarkId::new("maglev_10pct_unusable", n),
            &n,
            |bench, _| {
                bench.iter(|| {
                    k = (k + 1) & 4095;
                    black_box(b.pick(&eps, Some(keys[k]), |i| !down[i], NOW))
                })
            },
        );
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let eps = endpoints(1000);
    c.bench_function("balance/new/maglev/1000", |b| {
        b.iter(|| {
            black_box(Balancer::new(
                BalancePolicy::ConsistentHash,
                black_box(&eps),
            ))
        })
    });
}

criterion_group!(benches, picks, build);
criterion_main!(benches);
