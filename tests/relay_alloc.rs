//! The relay's forwarding path allocates nothing per packet: ChannelData
//! and Send indications to a peer, ChannelData and Data indications back,
//! counted by a counting allocator on the gateway's runtime threads only
//! (the test's own client runs on the main thread with buffers made
//! before the count starts).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::turn_client::*;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the gateway's runtime threads.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only observes calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTED.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CONFIG: &str = r#"[server]
listen = "127.0.0.1:0"
[relay]
listen = "127.0.0.1:0"
relay_address = "127.0.0.1"
relay_ports = "50000-59999"
max_bitrate_kbps = 100000
allowed_peers = ["127.0.0.1/32"]
[[relay.users]]
name = "alice"
password = "alicepass"
"#;

#[test]
fn relaying_allocates_nothing_per_packet() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .build()
        .unwrap();
    let (gw, client, relayed, peer) = rt.block_on(async {
        let gw = support::gateway(CONFIG).await;
        let udp = gw.relay().unwrap().udp_addr();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let mut c = TurnClient::udp(udp, Creds::new("alice", "alicepass")).await;
        let relayed = c.allocate().await.addr(XOR_RELAYED_ADDRESS).unwrap();
        assert!(c.bind_channel(0x4000, peer_addr).await.success);
        (gw, c.into_std_udp(), relayed, peer)
    });
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let server = gw.relay().unwrap().udp_addr();
    let peer_addr = peer.local_addr().unwrap();
    let neighbour = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // A voice frame as ChannelData, and as a Send indication.
    let payload = [0x5Au8; 120];
    let mut channel_data = vec![0x40, 0x00, 0x00, payload.len() as u8];
    channel_data.extend_from_slice(&payload);
    let send = {
        let mut b = stun_types::message::Message::builder(
            stun_types::message::MessageType::from_class_method(
                stun_types::message::MessageClass::Indication,
                SEND,
            ),
            stun_types::message::TransactionId::generate(),
            stun_types::message::MessageWriteVec::new(),
        );
        use stun_types::message::{MessageWrite, MessageWriteExt};
        let tid = b.transaction_id();
        b.add_attribute(&stun_types::attribute::RawAttribute::new(
            stun_types::attribute::AttributeType::new(XOR_PEER_ADDRESS),
            &xor_addr(peer_addr, tid),
        ))
        .unwrap();
        b.add_attribute(&stun_types::attribute::RawAttribute::new(
            stun_types::attribute::AttributeType::new(DATA_ATTR),
            &payload,
        ))
        .unwrap();
        b.finish()
    };
    let mut buf = vec![0u8; 2048];
    let mut round = |n: usize| {
        for i in 0..n {
            // Client → peer, alternating ChannelData and Send.
            let out = if i % 2 == 0 { &channel_data } else { &send };
            client.send_to(out, server).unwrap();
            let (len, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!((len, from), (payload.len(), relayed));
            // Peer → client: ChannelData (the channel's peer), then a Data
            // indication (another port of the peer's address, no channel).
            peer.send_to(&payload, relayed).unwrap();
            let (len, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(len, 4 + payload.len());
            assert_eq!(&buf[..2], &[0x40, 0x00]);
            neighbour.send_to(&payload, relayed).unwrap();
            let (len, _) = client.recv_from(&mut buf).unwrap();
            // A Data indication: header, XOR-PEER-ADDRESS (12), DATA (4 + 120).
            assert_eq!(len, 20 + 12 + 4 + payload.len());
            assert_eq!(&buf[..2], &[0x00, 0x17]);
        }
    };
    // Warm up: buffers, scratch space and socket registrations settle.
    round(200);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(
        before > 0,
        "the counter sees the gateway's threads (start-up allocates)"
    );
    let rounds = 1_000;
    round(rounds);
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        during,
        0,
        "{during} allocations on the gateway's threads while relaying {rounds} packets to the peer and {} back",
        2 * rounds
    );
    drop(gw);
    drop(rt);
}
