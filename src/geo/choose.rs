//! The region choice itself: pure arithmetic over a few candidates, no
//! clock, no atomics (the caller reads those), so every rule is a table test.

/// Why a region was chosen; shown in the `x-aether-region` response header
/// and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The lowest expected latency of all the service's regions.
    Nearest,
    /// A closer region is down, full, or recovering (not yet usable for
    /// `failback_seconds`).
    Failover,
    /// A closer region exists, but not by more than `hysteresis_ms`: the
    /// region in use is kept, so players do not bounce on measurement noise.
    Hysteresis,
    /// The client's session asked for this region (sticky cookie/header).
    Sticky,
    /// The route pins this region.
    Pinned,
    /// No region has a usable endpoint: the service's `all_unhealthy` rule
    /// decides.
    NoHealthyRegion,
}

impl Reason {
    /// Every reason, in header-table order.
    pub const ALL: [Reason; 6] = [
        Reason::Nearest,
        Reason::Failover,
        Reason::Hysteresis,
        Reason::Sticky,
        Reason::Pinned,
        Reason::NoHealthyRegion,
    ];

    /// Its name in headers, logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Nearest => "nearest",
            Reason::Failover => "failover",
            Reason::Hysteresis => "hysteresis",
            Reason::Sticky => "sticky",
            Reason::Pinned => "pinned",
            Reason::NoHealthyRegion => "no-healthy-region",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One region a request could go to, as the caller sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Expected latency from the client's region, in ms (configured +
    /// measured).
    pub cost_ms: u32,
    /// Has an endpoint that passes its checks and has room.
    pub usable: bool,
    /// Usable for at least `failback_seconds` (or since the start): a
    /// region that just came back is not chosen while another is usable.
    pub settled: bool,
}

/// Choose among `candidates` (at most 255): the index and why, or `None`
/// when none is usable.
///
/// `current` is the region the same client region's requests went to last;
/// it is kept while it is usable and settled and no other settled region is
/// more than `hysteresis_ms` closer.
pub fn choose(
    candidates: &[Candidate],
    current: Option<usize>,
    hysteresis_ms: u32,
) -> Option<(usize, Reason)> {
    let argmin = |ok: &dyn Fn(&Candidate) -> bool| {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| ok(c))
            .min_by_key(|(i, c)| (c.cost_ms, *i))
            .map(|(i, _)| i)
    };
    let best_usable = argmin(&|c| c.usable)?;
    // A recovering region wins only when nothing settled is usable.
    let best = argmin(&|c| c.usable && c.settled).unwrap_or(best_usable);
    let chosen = match current {
        Some(cur)
            if cur < candidates.len()
                && candidates[cur].usable
                && candidates[cur].settled
                && candidates[cur].cost_ms
                    <= candidates[best].cost_ms.saturating_add(hysteresis_ms) =>
        {
            cur
        }
        _ => best,
    };
    let cost = candidates[chosen].cost_ms;
    let closer = |c: &Candidate| c.cost_ms < cost;
    let reason = if !candidates.iter().any(closer) {
        Reason::Nearest
    } else if candidates
        .iter()
        .any(|c| closer(c) && !(c.usable && c.settled))
    {
        Reason::Failover
    } else {
        Reason::Hysteresis
    };
    Some((chosen, reason))
}

/// The other usable regions in the order a retry should try them: closest
/// first, settled before recovering. Writes indices into `out`, returns how
/// many.
pub fn fallback_order(candidates: &[Candidate], first: usize, out: &mut [u8]) -> usize {
    let mut n = 0;
    for (i, c) in candidates.iter().enumerate() {
        if i != first && c.usable && n < out.len() {
            out[n] = i as u8;
            n += 1;
        }
    }
    out[..n].sort_unstable_by_key(|&i| {
        let c = &candidates[usize::from(i)];
        (!c.settled, c.cost_ms, i)
    });
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cost_ms: u32, usable: bool, settled: bool) -> Candidate {
        Candidate {
            cost_ms,
            usable,
            settled,
        }
    }

    #[test]
    fn the_nearest_usable_region_wins() {
        let cs = [c(80, true, true), c(10, true, true), c(40, true, true)];
        assert_eq!(choose(&cs, None, 20), Some((1, Reason::Nearest)));
    }

    #[test]
    fn a_down_region_fails_over_to_the_next_closest() {
        let cs = [c(80, true, true), c(10, false, false), c(40, true, true)];
        assert_eq!(choose(&cs, None, 20), Some((2, Reason::Failover)));
        assert_eq!(choose(&cs, Some(1), 20), Some((2, Reason::Failover)));
        let none = [c(10, false, false), c(40, false, false)];
        assert_eq!(choose(&none, Some(0), 20), None);
    }

    #[test]
    fn a_recovering_region_waits_until_settled_unless_nothing_else_is_usable() {
        let cs = [c(10, true, false), c(80, true, true)];
        assert_eq!(choose(&cs, Some(1), 20), Some((1, Reason::Failover)));
        assert_eq!(choose(&cs, None, 20), Some((1, Reason::Failover)));
        let settled = [c(10, true, true), c(80, true, true)];
        assert_eq!(choose(&settled, Some(1), 20), Some((0, Reason::Nearest)));
        let alone = [c(10, true, false), c(80, false, false)];
        assert_eq!(choose(&alone, Some(1), 20), Some((0, Reason::Nearest)));
    }

    #[test]
    fn hysteresis_keeps_the_current_region_within_the_margin() {
        let cs = [c(30, true, true), c(45, true, true)];
        assert_eq!(choose(&cs, Some(1), 20), Some((1, Reason::Hysteresis)));
        assert_eq!(choose(&cs, Some(1), 15), Some((1, Reason::Hysteresis)));
        assert_eq!(choose(&cs, Some(1), 14), Some((0, Reason::Nearest)));
        assert_eq!(choose(&cs, Some(0), 20), Some((0, Reason::Nearest)));
        // A current region out of range (the set changed) is ignored.
        assert_eq!(choose(&cs, Some(7), 20), Some((0, Reason::Nearest)));
    }

    #[test]
    fn ties_go_to_the_first_candidate() {
        let cs = [c(10, true, true), c(10, true, true)];
        assert_eq!(choose(&cs, None, 0), Some((0, Reason::Nearest)));
        assert_eq!(choose(&cs, Some(1), 0), Some((1, Reason::Nearest)));
    }

    #[test]
    fn fallbacks_are_usable_settled_first_then_by_cost() {
        let cs = [
            c(10, true, true),
            c(90, true, true),
            c(20, true, false),
            c(30, false, false),
            c(50, true, true),
        ];
        let mut out = [0u8; 8];
        let n = fallback_order(&cs, 0, &mut out);
        assert_eq!(&out[..n], &[4, 1, 2]);
    }

    proptest::proptest! {
        /// Never an unusable region; a recovering one only when nothing
        /// settled is usable; never worse than the best settled region by
        /// more than the margin; `None` only when nothing is usable.
        #[test]
        fn the_choice_keeps_its_promises(
            cs in proptest::collection::vec((0u32..500, proptest::bool::ANY, proptest::bool::ANY), 1..16),
            current in proptest::option::of(0usize..20),
            margin in 0u32..100,
        ) {
            let cs: Vec<Candidate> = cs.into_iter().map(|(cost_ms, usable, settled)| c(cost_ms, usable, usable && settled)).collect();
            match choose(&cs, current, margin) {
                None => proptest::prop_assert!(cs.iter().all(|c| !c.usable)),
                Some((i, why)) => {
                    proptest::prop_assert!(cs[i].usable);
                    let best_settled = cs.iter().filter(|c| c.settled).map(|c| c.cost_ms).min();
                    if let Some(best) = best_settled {
                        proptest::prop_assert!(cs[i].settled);
                        proptest::prop_assert!(cs[i].cost_ms <= best + margin);
                    }
                    if why == Reason::Nearest {
                        proptest::prop_assert!(cs.iter().all(|c| c.cost_ms >= cs[i].cost_ms));
                    }
                }
            }
        }
    }
}
