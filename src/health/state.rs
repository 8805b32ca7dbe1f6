//! The active-check threshold machine: pure, no time, no sockets.

use serde::Serialize;

/// What active checks say of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Not probed yet (or not probed at all): served, as Envoy and nginx do,
    /// so a gateway start or a new endpoint never begins with an outage.
    Unknown,
    /// The last `healthy_threshold` probes (or the first one) passed.
    Healthy,
    /// The last `unhealthy_threshold` probes (or the first one) failed.
    Unhealthy,
}

impl HealthState {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            HealthState::Unknown => 0,
            HealthState::Healthy => 1,
            HealthState::Unhealthy => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => HealthState::Healthy,
            2 => HealthState::Unhealthy,
            _ => HealthState::Unknown,
        }
    }

    /// Whether requests may go to an endpoint in this state.
    pub fn serves(self) -> bool {
        self != HealthState::Unhealthy
    }
}

/// Consecutive probe results and the state they lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive failures that mark a healthy endpoint down.
    pub unhealthy: u32,
    /// Consecutive successes that mark an unhealthy endpoint up.
    pub healthy: u32,
}

/// The counters of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeCounter {
    /// Where the endpoint stands.
    pub state: HealthState,
    /// Passing probes in a row.
    pub consecutive_successes: u32,
    /// Failing probes in a row.
    pub consecutive_failures: u32,
}

impl Default for ProbeCounter {
    fn default() -> Self {
        ProbeCounter {
            state: HealthState::Unknown,
            consecutive_successes: 0,
            consecutive_failures: 0,
        }
    }
}

impl ProbeCounter {
    /// Count one probe result; true when the state changed.
    ///
    /// The first result settles an `Unknown` endpoint at once: there is no
    /// history to protect against flapping, and serving a dead endpoint for
    /// `unhealthy_threshold` intervals after a start would be an outage.
    pub fn record(&mut self, passed: bool, t: Thresholds) -> bool {
        if passed {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
        }
        let next = match (self.state, passed) {
            (HealthState::Unknown, true) => HealthState::Healthy,
            (HealthState::Unknown, false) => HealthState::Unhealthy,
            (HealthState::Healthy, false) if self.consecutive_failures >= t.unhealthy => {
                HealthState::Unhealthy
            }
            (HealthState::Unhealthy, true) if self.consecutive_successes >= t.healthy => {
                HealthState::Healthy
            }
            (s, _) => s,
        };
        let changed = next != self.state;
        self.state = next;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Thresholds = Thresholds {
        unhealthy: 3,
        healthy: 2,
    };

    fn run(results: &[bool]) -> Vec<HealthState> {
        let mut c = ProbeCounter::default();
        results
            .iter()
            .map(|&r| {
                c.record(r, T);
                c.state
            })
            .collect()
    }

    #[test]
    fn first_result_settles_unknown() {
        assert_eq!(run(&[true]), [HealthState::Healthy]);
        assert_eq!(run(&[false]), [HealthState::Unhealthy]);
    }

    #[test]
    fn down_after_exactly_the_threshold_and_up_after_exactly_the_other() {
        use HealthState::{Healthy as H, Unhealthy as U};
        assert_eq!(
            run(&[true, false, false, false, true, true]),
            [H, H, H, U, U, H]
        );
        // One lost probe, or two, never flaps the state.
        assert_eq!(
            run(&[true, false, false, true, false, false, true]),
            [H, H, H, H, H, H, H]
        );
        // A single pass while down does not bring it back.
        assert_eq!(run(&[false, true, false, true]), [U, U, U, U]);
    }

    proptest! {
        #[test]
        fn state_changes_only_at_a_threshold(results in proptest::collection::vec(any::<bool>(), 1..200)) {
            let mut c = ProbeCounter::default();
            for (i, r) in results.iter().enumerate() {
                let before = c.state;
                let changed = c.record(*r, T);
                prop_assert_eq!(changed, before != c.state);
                if changed && i > 0 {
                    match c.state {
                        HealthState::Unhealthy => prop_assert_eq!(c.consecutive_failures, T.unhealthy),
                        HealthState::Healthy => prop_assert_eq!(c.consecutive_successes, T.healthy),
                        HealthState::Unknown => prop_assert!(false, "never back to unknown"),
                    }
                }
            }
        }
    }
}
