//! The TURN core fed hostile datagrams from clients and peers: never a
//! panic; without credentials no allocation and no relayed byte; every
//! relayed payload a range of its datagram; every reply a well-formed STUN
//! message no larger than the output buffer; and no datagram makes the core
//! allocate more than a small multiple of its size (counted by a counting
//! allocator around each call).
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Bytes one datagram may make the core allocate: a few times its size
/// (attribute lists, the long-term key) and a fixed allowance (the nonce).
fn allowance(len: usize) -> usize {
    4 * len + 4096
}

use aether_gateway::relay::proto::authn::Authenticator;
use aether_gateway::relay::proto::stun::parse;
use aether_gateway::relay::proto::turn::{
    Action, Family, FiveTuple, RelaySockets, Transport, TurnConfig, TurnCore,
};
use libfuzzer_sys::fuzz_target;

struct Ports(u16);

impl RelaySockets for Ports {
    fn open(&mut self, _family: Family, _even: bool) -> Option<u16> {
        self.0 += 1;
        Some(50_000 + self.0)
    }
    fn close(&mut self, _port: u16) {}
}

fuzz_target!(|data: &[u8]| {
    let auth = Authenticator::new(
        "aether".into(),
        None,
        HashMap::from([("alice".to_owned(), "alicepass".to_owned())]),
        b"fuzz-nonce-key-fuzz-nonce-key-32",
        600,
    );
    let mut core = TurnCore::new(TurnConfig::new("192.0.2.1".parse().unwrap()), auth);
    let mut ports = Ports(0);
    let mut out = vec![0u8; 1500];
    let five = FiveTuple {
        client: "198.51.100.7:40000".parse().unwrap(),
        server: "192.0.2.1:3478".parse().unwrap(),
        transport: Transport::Udp,
    };
    // Several datagrams in one input, split on a marker, alternately from
    // the client and from a peer.
    for (i, d) in data.split(|&b| b == 0xFE).take(16).enumerate() {
        let now = i as u64 * 1_000;
        let before = ALLOCATED.load(Ordering::Relaxed);
        let action = if i % 4 == 3 {
            core.on_peer(50_001, "203.0.113.50:7000".parse().unwrap(), d, now, &mut out)
        } else {
            core.on_client(five, d, now, 1_800_000_000, &mut ports, &mut out)
        };
        let allocated = ALLOCATED.load(Ordering::Relaxed) - before;
        assert!(
            allocated <= allowance(d.len()),
            "{allocated} bytes allocated for a {}-byte datagram",
            d.len()
        );
        match action {
            Action::Reply(n) => {
                assert!(n <= out.len());
                assert!(parse(&out[..n]).is_some(), "a reply that does not parse");
            }
            Action::ToPeer { start, end, .. } => {
                // No credential can be forged by the fuzzer, so nothing is relayed.
                assert!(start <= end && end <= d.len());
                panic!("relayed without an allocation");
            }
            Action::ToClient { .. } => panic!("delivered without an allocation"),
            Action::Drop(_) => {}
        }
        assert_eq!(core.allocations(), 0);
    }
});
