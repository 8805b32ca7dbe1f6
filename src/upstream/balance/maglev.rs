//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a prime-sized
//! lookup table in which every endpoint fills slots in its own permutation
//! order, taking turns. Keys spread almost exactly evenly, and a change of
//! one endpoint moves little more than that endpoint's share of keys.

use super::hash::{probe, reduce, xxh64};
use super::schedule::{Stride, uniform};

/// Table size for small sets, the paper's own choice.
pub(crate) const MIN_TABLE: usize = 65_537;

/// Largest table built (64 MiB of `u32`); beyond 167k endpoints the slots per
/// endpoint drop below 100 rather than the table growing without bound.
const MAX_TABLE: usize = 1 << 24;

/// Probes of the table before falling back to a scan of the endpoints: with
/// half of them unusable, 16 probes all miss once in 65k picks.
pub(crate) const PROBES: u64 = 16;

// Seeds for the two permutation hashes; part of the fleet contract, like
// `stable_hash` itself.
const OFFSET_SEED: u64 = 0x6d61_676c_6576_3031;
const SKIP_SEED: u64 = 0x6d61_676c_6576_3032;

const EMPTY: u32 = u32::MAX;

fn is_prime(n: usize) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d <= n / d {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

fn next_prime(mut n: usize) -> usize {
    while !is_prime(n) {
        n += 1;
    }
    n
}

/// A prime with at least 100 slots per endpoint (the paper's bound for
/// shares within about 1%), never below [`MIN_TABLE`].
pub(crate) fn table_size(endpoints: usize) -> usize {
    next_prime(endpoints.saturating_mul(100).clamp(MIN_TABLE, MAX_TABLE))
}

/// A built Maglev table: slot -> endpoint index.
pub(crate) struct Maglev {
    table: Box<[u32]>,
}

impl Maglev {
    /// The table for endpoints with these identities and (reduced) weights.
    ///
    /// Endpoints take turns in identity order, not slice order, so two
    /// processes that list the same endpoints differently still agree on
    /// every key. Weights set how often an endpoint takes a turn, and so its
    /// share of slots.
    pub(crate) fn new(identities: &[u64], weights: &[u64]) -> Self {
        let n = identities.len().min(weights.len());
        if n == 0 {
            return Maglev {
                table: Box::default(),
            };
        }
        let m = table_size(n);
        let m64 = m as u64;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| (identities[i], i));
        let mut next = Vec::with_capacity(n);
        let mut skip = Vec::with_capacity(n);
        for &i in &order {
            let id = identities[i].to_le_bytes();
            next.push(xxh64(&id, OFFSET_SEED) % m64);
            // 1..m: coprime with the prime m, so the walk visits every slot.
            skip.push(xxh64(&id, SKIP_SEED) % (m64 - 1) + 1);
        }
        let turn_weights: Vec<u64> = order.iter().map(|&i| weights[i]).collect();
        let mut table = vec![EMPTY; m].into_boxed_slice();
        let mut fill = Fill {
            table: &mut table,
            order: &order,
            next: &mut next,
            skip: &skip,
        };
        if uniform(&turn_weights) {
            fill.run((0..n).cycle());
        } else {
            fill.run(Stride::new(&turn_weights));
        }
        Maglev { table }
    }

    /// The endpoint for `hash`: its slot's endpoint if usable, else the
    /// first usable one among up to [`PROBES`] remixed slots. A key whose
    /// endpoint is usable therefore never moves because another one is not.
    pub(crate) fn pick(
        &self,
        hash: u64,
        len: usize,
        usable: &impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        (0..PROBES)
            .map(|attempt| self.table[reduce(probe(hash, attempt), self.table.len())] as usize)
            .find(|&i| i < len && usable(i))
    }

    /// The slot -> endpoint index table (for tests).
    #[cfg(test)]
    pub(crate) fn table(&self) -> &[u32] {
        &self.table
    }
}

struct Fill<'a> {
    table: &'a mut [u32],
    order: &'a [usize],
    next: &'a mut [u64],
    skip: &'a [u64],
}

impl Fill<'_> {
    /// Gives each turn's endpoint its next preferred free slot until the
    /// table is full. Every turn fills one slot, and a walk always finds a
    /// free slot while there is one, so this ends after `m` turns.
    fn run(&mut self, turns: impl Iterator<Item = usize>) {
        let m = self.table.len() as u64;
        let mut free = self.table.len();
        for j in turns {
            if free == 0 {
                break;
            }
            loop {
                let slot = self.next[j];
                // Both are below m, so one subtraction wraps (no division).
                let after = slot + self.skip[j];
                self.next[j] = if after >= m { after - m } else { after };
                let entry = &mut self.table[slot as usize];
                if *entry == EMPTY {
                    // Indices are below MAX_ENDPOINTS, well inside u32.
                    *entry = self.order[j] as u32;
                    free -= 1;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sizes_are_primes_with_room_per_endpoint() {
        assert_eq!(table_size(0), 65_537);
        assert_eq!(table_size(10), 65_537);
        assert_eq!(table_size(1000), 100_003);
        assert!(is_prime(table_size(5000)) && table_size(5000) >= 500_000);
        assert!(is_prime(table_size(usize::MAX)));
        assert!(!is_prime(0) && !is_prime(1) && is_prime(2) && is_prime(3) && !is_prime(9));
    }

    #[test]
    fn every_slot_is_filled_and_weights_set_shares() {
        let ids = [11u64, 22, 33];
        let t = Maglev::new(&ids, &[1, 2, 1]);
        let count = |i| t.table().iter().filter(|&&x| x == i).count() as f64;
        let m = t.table().len() as f64;
        assert_eq!(count(0) + count(1) + count(2), m);
        assert!((count(1) / m - 0.5).abs() < 0.005);
        assert!((count(0) / m - 0.25).abs() < 0.005);
        assert!(Maglev::new(&[], &[]).pick(1, 0, &|_| true).is_none());
    }
}
