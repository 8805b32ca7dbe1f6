//! The per-allocation bitrate cap: a token bucket over relayed bytes, in
//! GCRA form (one `u64` of state, integer nanoseconds), so the forwarding
//! path polices a packet with one atomic update and no lock.
//!
//! The cap is on the voice payload (`max_bitrate_kbps` of Opus). What goes
//! over the wire is more: RTP and SRTP headers and tags, RTP header
//! extensions, the ChannelData or Send framing. So each packet is charged
//! its size less a fixed per-packet allowance, and the bucket holds a burst
//! (Opus in-band FEC and DTX make packet sizes uneven), so a client sending
//! exactly the cap never loses a packet while one sending more is cut to
//! it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bytes of each packet not counted against the cap: 12 (RTP header) + 10
/// (SRTP auth tag) + up to 20 (header extensions: audio level, abs-send
/// time, transport-cc) + 4 (ChannelData header), rounded up.
pub const DEFAULT_PACKET_OVERHEAD_BYTES: u32 = 48;

/// The largest packet the burst must always admit (an Ethernet MTU).
const MAX_PACKET_BYTES: u64 = 1500;

/// Default burst: a quarter second at the cap.
pub const DEFAULT_BURST: Duration = Duration::from_millis(250);

/// A bitrate cap: the shape of a bucket, shared by every allocation of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitrateCap {
    /// Nanoseconds of allowance one charged byte uses up.
    ns_per_byte: u64,
    /// How far ahead of real time the bucket may run (the burst), ns.
    burst_ns: u64,
    overhead_bytes: u32,
}

impl BitrateCap {
    /// A cap of `kbps` (1000 bits/s) of payload, with the default overhead
    /// allowance and burst. `None` for 0 (no cap).
    pub fn new(kbps: u32) -> Option<Self> {
        Self::with(kbps, DEFAULT_PACKET_OVERHEAD_BYTES, DEFAULT_BURST)
    }

    /// A cap with its overhead allowance and burst (at least one 1500-byte
    /// packet's worth: a packet that does not fit in the burst is never
    /// admitted).
    pub fn with(kbps: u32, overhead_bytes: u32, burst: Duration) -> Option<Self> {
        if kbps == 0 {
            return None;
        }
        // 8 bits a byte, kbps thousand bits a second.
        let ns_per_byte = (8_000_000 / u64::from(kbps)).max(1);
        // A packet is admitted only if it fits in the burst: at least one
        // full-size datagram must, or an idle client could send nothing.
        let burst_ns = u64::try_from(burst.as_nanos())
            .unwrap_or(u64::MAX / 4)
            .max(MAX_PACKET_BYTES * ns_per_byte);
        Some(BitrateCap {
            ns_per_byte,
            burst_ns,
            overhead_bytes,
        })
    }

    /// The cost of a packet of `len` bytes, ns of allowance: its size less
    /// the overhead allowance, but never less than [`MIN_CHARGE`] bytes, so
    /// a flood of tiny packets is not free.
    fn cost(&self, len: usize) -> u64 {
        let charged = (len as u64)
            .saturating_sub(u64::from(self.overhead_bytes))
            .max(MIN_CHARGE);
        charged.saturating_mul(self.ns_per_byte)
    }
}

/// Bytes every relayed packet is charged at least: an Opus DTX or
/// comfort-noise frame is a few bytes, sent a few times a second, so this
/// costs real voice nothing, while packets with no payload to speak of can
/// no longer be relayed without limit.
pub const MIN_CHARGE: u64 = 16;

/// One allocation's bucket: the theoretical arrival time of its next byte.
#[derive(Debug, Default)]
pub struct BitrateBucket {
    tat_ns: AtomicU64,
}

impl BitrateBucket {
    /// Police one packet of `len` bytes at `now_ns` (monotonic): `true` to
    /// relay it, `false` to drop it (it used none of the allowance).
    pub fn admit(&self, cap: &BitrateCap, len: usize, now_ns: u64) -> bool {
        let cost = cap.cost(len);
        self.tat_ns
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                let start = tat.max(now_ns);
                // Over the burst: the packet would run the bucket more than
                // `burst` ahead of real time.
                (start.saturating_add(cost) <= now_ns.saturating_add(cap.burst_ns))
                    .then(|| start.saturating_add(cost))
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Relay `seconds` of packets of `payload` bytes every `interval_ms`
    /// (plus the overhead), with `jitter_ms` of alternating early/late
    /// arrival; the packets let through and dropped.
    fn run(
        cap: &BitrateCap,
        payload: usize,
        interval_ms: u64,
        jitter_ms: u64,
        seconds: u64,
    ) -> (u64, u64) {
        let b = BitrateBucket::default();
        let (mut ok, mut dropped) = (0, 0);
        let n = seconds * 1000 / interval_ms;
        for i in 0..n {
            let jitter = if i % 2 == 0 { 0 } else { jitter_ms * MS };
            let t = 1_000 * MS + i * interval_ms * MS + jitter;
            if b.admit(cap, payload + DEFAULT_PACKET_OVERHEAD_BYTES as usize, t) {
                ok += 1;
            } else {
                dropped += 1;
            }
        }
        (ok, dropped)
    }

    #[test]
    fn exactly_the_cap_loses_nothing_even_with_jitter_and_fec_bursts() {
        let cap = BitrateCap::new(64).unwrap();
        // 64 kbps of Opus in 20 ms frames: 160 bytes of payload each.
        assert_eq!(run(&cap, 160, 20, 0, 60), (3000, 0));
        assert_eq!(run(&cap, 160, 20, 15, 60), (3000, 0));
        // FEC: every tenth frame twice the size, the others smaller to keep
        // the average at the cap.
        let b = BitrateBucket::default();
        let mut dropped = 0;
        for i in 0..3000u64 {
            let payload = if i % 10 == 0 { 320 } else { 142 };
            if !b.admit(&cap, payload + 48, 1_000 * MS + i * 20 * MS) {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 0);
    }

    #[test]
    fn twice_the_cap_is_cut_to_the_cap() {
        let cap = BitrateCap::new(64).unwrap();
        let (ok, dropped) = run(&cap, 320, 20, 0, 60);
        assert_eq!(ok + dropped, 3000);
        // Relayed payload rate within 1 % of the cap (plus the burst).
        let relayed_kbps = ok * 320 * 8 / 60 / 1000;
        assert!(
            (63..=66).contains(&relayed_kbps),
            "{relayed_kbps} kbps, {ok} packets"
        );
    }

    #[test]
    fn a_dropped_packet_costs_nothing_and_no_cap_means_none() {
        // 1 µs a byte; the burst is raised to one full-size packet.
        let cap = BitrateCap::with(8000, 0, Duration::ZERO).unwrap();
        let b = BitrateBucket::default();
        let us = |n: u64| n * 1000;
        assert!(b.admit(&cap, 1000, us(100_000)));
        assert!(!b.admit(&cap, 1000, us(100_000)));
        assert!(!b.admit(&cap, 1000, us(100_400)));
        assert!(b.admit(&cap, 1000, us(100_600)));
        assert_eq!(BitrateCap::new(0), None);
        // Packets no larger than the allowance still cost MIN_CHARGE: at
        // 64 kbps with a 250 ms burst, 2000 bytes of credit = 125 of them
        // at once, and then no more until time passes.
        let cap = BitrateCap::with(64, 48, Duration::from_millis(250)).unwrap();
        let b = BitrateBucket::default();
        let n = (0..1000).take_while(|_| b.admit(&cap, 48, 0)).count();
        assert_eq!(n, 2000 / MIN_CHARGE as usize);
        assert!(b.admit(&cap, 1, 2 * MS));
    }

    proptest::proptest! {
        /// Over any stretch of time, what is let through never exceeds the
        /// burst plus the rate times the time.
        #[test]
        fn never_more_than_burst_plus_rate(
            kbps in 1u32..10_000,
            gaps in proptest::collection::vec((0u64..50 * MS, 0usize..1500), 1..200),
        ) {
            let cap = BitrateCap::with(kbps, 0, Duration::from_millis(100)).unwrap();
            let b = BitrateBucket::default();
            let start = 10 * MS;
            let mut t = start;
            let mut sent_ns = 0u64;
            for (gap, len) in gaps {
                t += gap;
                if b.admit(&cap, len, t) {
                    sent_ns += cap.cost(len);
                }
                proptest::prop_assert!(sent_ns <= (t - start) + cap.burst_ns);
            }
        }
    }
}
