use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use proptest::prelude::*;

use super::*;

const NOW: Duration = Duration::from_secs(1);
const MS: u64 = 1_000_000;

#[derive(Debug, Clone)]
struct Fake {
    weight: u32,
    in_flight: Cell<u32>,
    latency: u64,
    id: u64,
}

impl Load for Fake {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }
    fn latency_ns(&self, _now: Duration) -> u64 {
        self.latency
    }
    fn identity(&self) -> u64 {
        self.id
    }
}

fn fake(i: usize) -> Fake {
    Fake {
        weight: 1,
        in_flight: Cell::new(0),
        latency: 0,
        id: stable_hash(format!("10.0.{}.{}:8080", i / 256, i % 256).as_bytes()),
    }
}

fn fakes(n: usize) -> Vec<Fake> {
    (0..n).map(fake).collect()
}

fn weighted(weights: &[u32]) -> Vec<Fake> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Fake {
            weight: w,
            ..fake(i)
        })
        .collect()
}

fn picks(
    b: &Balancer,
    eps: &[Fake],
    n: usize,
    usable: impl Fn(usize) -> bool + Copy,
) -> Vec<usize> {
    (0..n)
        .map(|_| b.pick(eps, None, usable, NOW).expect("a usable endpoint"))
        .collect()
}

fn counts(picks: &[usize], n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &i in picks {
        c[i] += 1;
    }
    c
}

fn all(_: usize) -> bool {
    true
}

// --- round robin ---

#[test]
fn round_robin_cycles_exactly_with_equal_weights() {
    let eps = weighted(&[3, 3, 3]);
    let b = Balancer::new(BalancePolicy::RoundRobin, &eps);
    assert_eq!(b.policy(), BalancePolicy::RoundRobin);
    assert_eq!(picks(&b, &eps, 9, all), [0, 1, 2, 0, 1, 2, 0, 1, 2]);
}

#[test]
fn round_robin_weights_5_1_1_are_exact_per_cycle_and_interleaved() {
    let eps = weighted(&[5, 1, 1]);
    let b = Balancer::new(BalancePolicy::RoundRobin, &eps);
    let seq = picks(&b, &eps, 70, all);
    assert_eq!(seq[..7], [0, 0, 1, 0, 2, 0, 0]);
    for cycle in seq.chunks(7) {
        assert_eq!(counts(cycle, 3), [5, 1, 1]);
    }
    // Longest run of endpoint 0, across cycle boundaries too.
    let longest = seq
        .split(|&i| i != 0)
        .map(<[usize]>::len)
        .max()
        .unwrap_or(0);
    assert_eq!(longest, 4);
}

#[test]
fn round_robin_scales_weights_by_their_gcd() {
    let eps = weighted(&[500, 100, 100]);
    let b = Balancer::new(BalancePolicy::RoundRobin, &eps);
    assert_eq!(picks(&b, &eps, 7, all), [0, 0, 1, 0, 2, 0, 0]);
    let eps = weighted(&[0, 0]);
    let b = Balancer::new(BalancePolicy::RoundRobin, &eps);
    assert_eq!(picks(&b, &eps, 4, all), [0, 1, 0, 1]);
}

#[test]
fn round_robin_walks_past_unusable_endpoints() {
    let eps = fakes(3);
    let b = Balancer::new(BalancePolicy::RoundRobin, &eps);
    // The unusable endpoint's turns are skipped, not handed to its successor.
    assert_eq!(picks(&b, &eps, 6, |i| i != 1), [0, 2, 0, 2, 0, 2]);
    let eps = weighted(&[5, 1, 1]);
    let b = Balancer::new(BalancePolicy::RoundRobin, &eps);
    // Endpoint 0 out: the other two keep their 1:1 ratio.
    let got = picks(&b, &eps, 70, |i| i != 0);
    assert_eq!(got.iter().filter(|&&i| i == 1).count(), 35, "{got:?}");
    assert_eq!(got.iter().filter(|&&i| i == 2).count(), 35, "{got:?}");
}

#[test]
fn round_robin_is_none_only_when_nothing_is_usable() {
    let eps = weighted(&[5, 1, 1, 1, 1]);
    let b = Balancer::new(BalancePolicy::RoundRobin, &eps);
    assert_eq!(b.pick(&eps, None, |_| false, NOW), None);
    assert_eq!(picks(&b, &eps, 20, |i| i == 2), [2; 20]);
    let none: [Fake; 0] = [];
    assert_eq!(
        Balancer::new(BalancePolicy::RoundRobin, &none).pick(&none, None, all, NOW),
        None
    );
}

#[test]
fn consistent_hash_without_a_key_is_round_robin() {
    let eps = fakes(3);
    let b = Balancer::new(BalancePolicy::ConsistentHash, &eps);
    assert_eq!(picks(&b, &eps, 6, all), [0, 1, 2, 0, 1, 2]);
}

// --- power of two choices ---

#[test]
fn least_request_sends_everything_to_the_idle_one_of_two() {
    fastrand::seed(7);
    let eps = fakes(2);
    eps[1].in_flight.set(10);
    let b = Balancer::new(BalancePolicy::LeastRequest, &eps);
    assert_eq!(counts(&picks(&b, &eps, 10_000, all), 2), [10_000, 0]);
}

#[test]
fn least_request_never_picks_the_busiest_and_spreads_over_the_rest() {
    fastrand::seed(7);
    let eps = fakes(10);
    eps[4].in_flight.set(10);
    let b = Balancer::new(BalancePolicy::LeastRequest, &eps);
    let c = counts(&picks(&b, &eps, 10_000, all), 10);
    assert_eq!(c[4], 0);
    // 10_000 / 9 = 1111 each when drawn fairly.
    for (i, &n) in c.iter().enumerate().filter(|&(i, _)| i != 4) {
        assert!((900..=1_330).contains(&n), "endpoint {i}: {n}");
    }
}

#[test]
fn least_request_divides_by_weight() {
    fastrand::seed(7);
    // (3 + 1) / 4 = 1 against (1 + 1) / 1 = 2: the heavier one wins.
    let eps = weighted(&[4, 1]);
    eps[0].in_flight.set(3);
    eps[1].in_flight.set(1);
    let b = Balancer::new(BalancePolicy::LeastRequest, &eps);
    assert_eq!(counts(&picks(&b, &eps, 1_000, all), 2), [1_000, 0]);
}

#[test]
fn p2c_finds_the_only_usable_endpoint() {
    fastrand::seed(7);
    let eps = fakes(50);
    for policy in [BalancePolicy::LeastRequest, BalancePolicy::PeakEwma] {
        let b = Balancer::new(policy, &eps);
        assert_eq!(picks(&b, &eps, 200, |i| i == 37), [37; 200]);
        assert_eq!(b.pick(&eps, None, |_| false, NOW), None);
        assert_eq!(b.pick(&eps[..1], None, all, NOW), Some(0));
        assert_eq!(b.pick(&eps[..1], None, |_| false, NOW), None);
    }
}

/// An endpoint with a real Peak-EWMA fed by simulated responses.
struct Live {
    in_flight: Cell<u32>,
    ewma: PeakEwma,
    id: u64,
}

impl Load for Live {
    fn weight(&self) -> u32 {
        1
    }
    fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }
    fn latency_ns(&self, now: Duration) -> u64 {
        self.ewma.get_ns(now)
    }
    fn identity(&self) -> u64 {
        self.id
    }
}

#[test]
fn peak_ewma_sends_most_load_to_the_fast_endpoint() {
    fastrand::seed(7);
    // 1 ms and 10 ms servers, a request every 20 µs: all on the fast one
    // would queue 50 deep (51 ms), so the slow one must take some, but at
    // equal cost the fast one carries about 99%.
    let service = [MS, 10 * MS];
    let eps: Vec<Live> = (0..2)
        .map(|i| Live {
            in_flight: Cell::new(0),
            ewma: PeakEwma::default(),
            id: i,
        })
        .collect();
    let b = Balancer::new(BalancePolicy::PeakEwma, &eps);
    let mut done = BinaryHeap::new();
    let mut c = [0usize; 2];
    for step in 0..20_000u64 {
        let now = step * 20_000;
        while let Some(&Reverse((at, i, sent))) = done.peek() {
            if at > now {
                break;
            }
            done.pop();
            let e: &Live = &eps[i];
            e.in_flight.set(e.in_flight.get() - 1);
            e.ewma
                .observe(Duration::from_nanos(at - sent), Duration::from_nanos(at));
        }
        let i = b
            .pick(&eps, None, all, Duration::from_nanos(now))
            .expect("both usable");
        eps[i].in_flight.set(eps[i].in_flight.get() + 1);
        done.push(Reverse((now + service[i], i, now)));
        c[i] += 1;
    }
    assert!(c[0] * 100 >= 80 * 20_000, "{c:?}");
    assert!(c[1] > 0, "{c:?}");
}

#[test]
fn peak_ewma_prefers_lower_latency_at_equal_load() {
    fastrand::seed(7);
    let mut eps = fakes(2);
    eps[0].latency = MS;
    eps[1].latency = 10 * MS;
    let b = Balancer::new(BalancePolicy::PeakEwma, &eps);
    assert_eq!(counts(&picks(&b, &eps, 1_000, all), 2), [1_000, 0]);
    // Ten times the queue on the fast one outweighs ten times the latency.
    eps[0].in_flight.set(10);
    assert_eq!(counts(&picks(&b, &eps, 1_000, all), 2), [0, 1_000]);
}

#[test]
fn peak_ewma_gives_a_new_endpoint_some_traffic_but_not_all() {
    fastrand::seed(7);
    let mut eps = fakes(3);
    eps[0].latency = MS;
    eps[1].latency = 10 * MS;
    let b = Balancer::new(BalancePolicy::PeakEwma, &eps);
    let c = counts(&picks(&b, &eps, 10_000, all), 3);
    // Drawn in 2 of 3 pairs and winning half of those (it ties on cost):
    // about 1/3.
    assert!((2_800..=3_900).contains(&c[2]), "{c:?}");
    assert!(c[0] > c[1], "{c:?}");
}

// --- consistent hashing ---

fn keys(n: usize) -> Vec<u64> {
    (0..n)
        .map(|k| stable_hash(format!("session-{k}").as_bytes()))
        .collect()
}

/// The identity each key goes to.
fn owners(eps: &[Fake], keys: &[u64], usable: impl Fn(usize) -> bool + Copy) -> Vec<u64> {
    let b = Balancer::new(BalancePolicy::ConsistentHash, eps);
    keys.iter()
        .map(|&k| {
            let i = b
                .pick(eps, Some(k), usable, NOW)
                .expect("a usable endpoint");
            assert!(usable(i));
            eps[i].id
        })
        .collect()
}

fn moved(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[test]
fn maglev_spreads_keys_evenly() {
    let eps = fakes(10);
    let keys = keys(100_000);
    let owners = owners(&eps, &keys, all);
    for e in &eps {
        let share = owners.iter().filter(|&&id| id == e.id).count();
        assert!((8_000..=12_000).contains(&share), "{share}");
    }
}

#[test]
fn maglev_adding_an_endpoint_moves_about_its_share() {
    let keys = keys(100_000);
    let before = owners(&fakes(10), &keys, all);
    let after = owners(&fakes(11), &keys, all);
    let moved = moved(&before, &after);
    // Ideal 1/11 = 9.1%.
    assert!((5_000..=15_000).contains(&moved), "{moved}");
}

#[test]
fn maglev_removing_an_endpoint_moves_its_keys_and_few_others() {
    let keys = keys(100_000);
    let eps = fakes(10);
    let before = owners(&eps, &keys, all);
    let fewer: Vec<Fake> = eps.iter().filter(|e| e.id != eps[3].id).cloned().collect();
    let after = owners(&fewer, &keys, all);
    assert!(
        moved(&before, &after) <= 15_000,
        "{}",
        moved(&before, &after)
    );
    for (b, a) in before.iter().zip(&after) {
        if *b == eps[3].id {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn maglev_an_unusable_endpoint_moves_no_other_key() {
    let keys = keys(100_000);
    let eps = fakes(10);
    let before = owners(&eps, &keys, all);
    let after = owners(&eps, &keys, |i| i != 3);
    let again = owners(&eps, &keys, |i| i != 3);
    assert_eq!(after, again, "the fallback is deterministic");
    let mut spilled = 0;
    for (b, a) in before.iter().zip(&after) {
        if *b == eps[3].id {
            spilled += 1;
        } else {
            assert_eq!(a, b);
        }
    }
    assert_eq!(moved(&before, &after), spilled);
    // Two down: still only their keys move.
    let two = owners(&eps, &keys, |i| i != 3 && i != 7);
    for (b, a) in before.iter().zip(&two) {
        if *b != eps[3].id && *b != eps[7].id {
            assert_eq!(a, b);
        }
    }
}

#[test]
fn maglev_tables_depend_only_on_the_endpoints() {
    let eps = fakes(10);
    let table = |eps: &[Fake]| -> Vec<u64> {
        let b = Balancer::new(BalancePolicy::ConsistentHash, eps);
        let t = b.maglev.as_ref().expect("a table").table();
        t.iter().map(|&i| eps[i as usize].id).collect()
    };
    let first = table(&eps);
    assert_eq!(first.len(), 65_537);
    assert_eq!(first, table(&eps));
    let mut reversed = eps.clone();
    reversed.reverse();
    assert_eq!(first, table(&reversed), "slice order does not matter");
}

#[test]
fn maglev_falls_back_to_any_usable_endpoint() {
    let eps = fakes(50);
    let b = Balancer::new(BalancePolicy::ConsistentHash, &eps);
    for k in keys(1_000) {
        assert_eq!(b.pick(&eps, Some(k), |i| i == 17, NOW), Some(17));
        assert_eq!(b.pick(&eps, Some(k), |_| false, NOW), None);
    }
}

// --- any input ---

#[derive(Debug, Clone)]
struct Case {
    eps: Vec<(u32, u32, u64, u64, bool)>,
}

fn any_weight() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), 1u32..10, Just(u32::MAX), any::<u32>()]
}

fn any_case() -> impl Strategy<Value = Case> {
    proptest::collection::vec(
        (
            any_weight(),
            prop_oneof![Just(0u32), 0u32..20, Just(u32::MAX)],
            prop_oneof![Just(0u64), 0u64..100_000_000, Just(u64::MAX)],
            prop_oneof![0u64..4, any::<u64>()],
            prop::bool::weighted(0.7),
        ),
        0..50,
    )
    .prop_map(|eps| Case { eps })
}

fn any_policy() -> impl Strategy<Value = BalancePolicy> {
    prop_oneof![
        Just(BalancePolicy::RoundRobin),
        Just(BalancePolicy::LeastRequest),
        Just(BalancePolicy::PeakEwma),
        Just(BalancePolicy::ConsistentHash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn pick_is_usable_or_none_iff_nothing_is(
        case in any_case(),
        policy in any_policy(),
        hash in proptest::option::of(any::<u64>()),
        built_len in any::<prop::sample::Index>(),
        seed in any::<u64>(),
        now in any::<u64>(),
    ) {
        fastrand::seed(seed);
        let eps: Vec<Fake> = case
            .eps
            .iter()
            .map(|&(weight, in_flight, latency, id, _)| Fake {
                weight,
                in_flight: Cell::new(in_flight),
                latency,
                id,
            })
            .collect();
        let usable: Vec<bool> = case.eps.iter().map(|e| e.4).collect();
        let ok = |i: usize| usable.get(i).copied().unwrap_or(false);
        let any_usable = usable.iter().any(|&u| u);
        // Built over the slice itself, and over a prefix of it (a slice that
        // changed since the build must still get valid answers).
        let prefix = built_len.index(eps.len() + 1);
        for built in [&eps[..], &eps[..prefix]] {
            let b = Balancer::new(policy, built);
            for _ in 0..3 {
                match b.pick(&eps, hash, ok, Duration::from_nanos(now)) {
                    Some(i) => prop_assert!(i < eps.len() && usable[i]),
                    None => prop_assert!(!any_usable),
                }
                // And a slice shorter than the build.
                let short = &eps[..prefix];
                match b.pick(short, hash, ok, Duration::from_nanos(now)) {
                    Some(i) => prop_assert!(i < short.len() && usable[i]),
                    None => prop_assert!(!usable[..prefix].iter().any(|&u| u)),
                }
            }
        }
    }
}
