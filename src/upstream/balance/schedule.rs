//! Weighted turn orders, computed once when a balancer is built: the
//! interleaved round-robin schedule, and the order in which Maglev endpoints
//! take table slots.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Longest round-robin cycle kept for weights alone; bigger weight sums are
/// scaled down (a cycle of 4096 still expresses ratios to about 0.1%).
pub(crate) const MAX_CYCLE: u64 = 4096;

/// Above this many `n * cycle` steps the nginx order (O(n) per step) gives
/// way to the stride order (O(log n) per step).
const SMOOTH_BUDGET: u64 = 1 << 24;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Weights divided by their common divisor; 0 counts as 1.
pub(crate) fn reduced(weights: impl Iterator<Item = u32>) -> Vec<u64> {
    let mut w: Vec<u64> = weights.map(|w| u64::from(w.max(1))).collect();
    let g = w.iter().fold(0, |g, &x| gcd(g, x));
    if g > 1 {
        w.iter_mut().for_each(|x| *x /= g);
    }
    w
}

/// True when every weight is the same (including no weights at all).
pub(crate) fn uniform(w: &[u64]) -> bool {
    w.windows(2).all(|p| p[0] == p[1])
}

/// Weights scaled so one cycle is at most about `MAX_CYCLE` turns (plus one
/// per endpoint, since none drops to 0), then reduced again.
fn bounded(w: Vec<u64>) -> Vec<u64> {
    let sum: u64 = w.iter().sum();
    if sum <= MAX_CYCLE {
        return w;
    }
    let scaled = w.iter().map(|&x| {
        let s = (u128::from(x) * u128::from(MAX_CYCLE) + u128::from(sum) / 2) / u128::from(sum);
        // s <= MAX_CYCLE, so the narrowing cannot fail.
        u32::try_from(s).unwrap_or(u32::MAX)
    });
    reduced(scaled)
}

/// One interleaved round-robin cycle over endpoints with weights `w`: each
/// index appears in proportion to its weight, spread out rather than
/// bunched. Empty when the weights are uniform (plain cycling needs no
/// table).
pub(crate) fn round_robin(w: Vec<u64>) -> Vec<u32> {
    let w = bounded(w);
    if uniform(&w) {
        return Vec::new();
    }
    let cycle: u64 = w.iter().sum();
    let Ok(len) = usize::try_from(cycle) else {
        return Vec::new();
    };
    if (w.len() as u64).saturating_mul(cycle) <= SMOOTH_BUDGET {
        smooth(&w, len)
    } else {
        Stride::new(&w).take(len).map(|i| i as u32).collect()
    }
}

/// nginx's smooth weighted round robin: every step each endpoint gains its
/// weight in credit, the richest one is chosen and pays the total. Over one
/// cycle every endpoint is chosen exactly `weight` times.
fn smooth(w: &[u64], len: usize) -> Vec<u32> {
    let total = len as i64;
    let w: Vec<i64> = w.iter().map(|&x| x as i64).collect();
    let mut credit = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        let (mut best, mut richest) = (0, i64::MIN);
        for (i, (c, &wi)) in credit.iter_mut().zip(&w).enumerate() {
            *c += wi;
            // Strictly greater: the first maximum wins ties, as in nginx.
            if *c > richest {
                (best, richest) = (i, *c);
            }
        }
        credit[best] -= total;
        out.push(best as u32);
    }
    out
}

/// Turns in order of their virtual time `(k - 1/2) / weight` for the k-th
/// turn of each index (ties by index): an endless sequence in which every
/// index's share is proportional to its weight. With equal weights it is
/// plain cycling 0, 1, .., n-1.
pub(crate) struct Stride {
    heap: BinaryHeap<Reverse<Turn>>,
}

#[derive(PartialEq, Eq)]
struct Turn {
    /// 2k - 1 for the k-th turn, so the half-step stays an integer.
    odd: u64,
    weight: u64,
    index: usize,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // odd/(2w) against other.odd/(2 other.w); both sides stay below
        // 2^33 * 2^32, well inside u128.
        let a = u128::from(self.odd) * u128::from(other.weight);
        let b = u128::from(other.odd) * u128::from(self.weight);
        a.cmp(&b).then(self.index.cmp(&other.index))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Stride {
    pub(crate) fn new(w: &[u64]) -> Self {
        let heap = w
            .iter()
            .enumerate()
            .map(|(index, &weight)| {
                Reverse(Turn {
                    odd: 1,
                    weight,
                    index,
                })
            })
            .collect();
        Stride { heap }
    }
}

impl Iterator for Stride {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let mut top = self.heap.peek_mut()?;
        let index = top.0.index;
        top.0.odd = top.0.odd.saturating_add(2);
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_reduced_and_zero_counts_as_one() {
        assert_eq!(reduced([10, 20, 30].into_iter()), [1, 2, 3]);
        assert_eq!(reduced([0, 0].into_iter()), [1, 1]);
        assert_eq!(reduced([0, 4].into_iter()), [1, 4]);
        assert!(round_robin(vec![3, 3, 3]).is_empty());
    }

    #[test]
    fn nginx_order_for_5_1_1() {
        assert_eq!(round_robin(vec![5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn big_weight_sums_are_bounded() {
        let s = round_robin(reduced([u32::MAX, 1, u32::MAX / 3].into_iter()));
        assert!(s.len() as u64 <= MAX_CYCLE + 3, "{}", s.len());
        let count = |i| s.iter().filter(|&&x| x == i).count();
        assert_eq!(count(1), 1);
        assert!((count(0) as f64 / count(2) as f64 - 3.0).abs() < 0.01);
    }

    #[test]
    fn stride_order_is_proportional_and_plain_when_uniform() {
        let w = [1u64, 1, 1];
        assert_eq!(
            Stride::new(&w).take(6).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2]
        );
        let w = [3u64, 1];
        let turns: Vec<_> = Stride::new(&w).take(8).collect();
        assert_eq!(turns.iter().filter(|&&i| i == 0).count(), 6);
        assert!(Stride::new(&[]).next().is_none());
    }
}
